//! The real binary refuses to start on bad configuration, naming the variable.

use std::{process::Stdio, time::Duration};

async fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pub-api"));
    command
        .env_remove("TICKETNEST_JWT_SECRET")
        .env("TICKETNEST_HTTP_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("pub-api exits on bad configuration")
        .expect("run pub-api");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn prod_without_a_jwt_secret_refuses_to_start_naming_the_variable() {
    let (code, stderr) = run_with(&[("TICKETNEST_ENV", "prod")]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("TICKETNEST_JWT_SECRET"), "{stderr}");
}

#[tokio::test]
async fn an_invalid_value_refuses_to_start_naming_the_variable() {
    let (code, stderr) = run_with(&[("TICKETNEST_SHARDS", "zero")]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("TICKETNEST_SHARDS"), "{stderr}");
}

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

/// Runs the real binary with debug JSON logs, signs up, logs in and books, then checks
/// the log: no password or token anywhere, and handler lines carry the request id that
/// the response echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_request_ids_and_never_passwords_or_tokens() {
    use serde_json::{json, Value};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let db = test_support::TestDatabase::new().await;
    let redis = test_support::TestRedis::new();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pub-api"))
        .env("TICKETNEST_DATABASE_URL", db.url())
        .env("TICKETNEST_REDIS_URL", test_support::redis_url())
        .env("TICKETNEST_REDIS_PREFIX", redis.prefix())
        .env("TICKETNEST_HTTP_ADDR", "127.0.0.1:0")
        .env("TICKETNEST_JWT_SECRET", test_support::TEST_JWT_SECRET)
        .env("TICKETNEST_ARGON2_MEMORY_KIB", "8")
        .env("TICKETNEST_ARGON2_ITERATIONS", "1")
        .env("TICKETNEST_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pub-api");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut log = Vec::new();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            log.push(line);
            if parsed["fields"]["message"] == "pub-api listening" {
                return parsed["fields"]["port"].as_u64().expect("port");
            }
        }
        panic!("pub-api exited before listening");
    })
    .await
    .expect("pub-api listening");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let password = "Secr3t!Pass";
    let signup = http
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({"email": "log@example.com", "password": password, "nickname": "logger"}))
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), reqwest::StatusCode::CREATED);
    let signup_id = signup.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let login: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "log@example.com", "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["accessToken"].as_str().expect("token").to_owned();
    let goods = http
        .get(format!("{base}/api/goods/1"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(goods.status(), reqwest::StatusCode::NOT_FOUND);

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().expect("pid").to_string()])
        .status()
        .expect("kill");
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            log.push(line);
        }
    })
    .await
    .expect("pub-api stopped");
    let status = child.wait().await.expect("wait");
    assert_eq!(status.code(), Some(0), "graceful exit");

    let all = log.join("\n");
    assert!(!all.contains(password), "a password reached the log");
    assert!(!all.contains(&token), "a token reached the log");
    assert!(!all.contains("$argon2"), "a password hash reached the log");
    let signed_up = log
        .iter()
        .find(|l| l.contains("user signed up"))
        .expect("signup logged");
    assert!(signed_up.contains(&signup_id), "{signed_up}");
    assert!(log.iter().any(|l| l.contains("request finished")));
}

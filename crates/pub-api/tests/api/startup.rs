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

/// The real binary on a database and Redis prefix of the test's, on any free port,
/// logging JSON lines to a pipe (its stdout).
fn pub_api(
    db: &test_support::TestDatabase,
    redis: &test_support::TestRedis,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pub-api"));
    command
        .env("TICKETNEST_DATABASE_URL", db.url())
        .env("TICKETNEST_REDIS_URL", redis.url())
        .env("TICKETNEST_REDIS_PREFIX", redis.prefix())
        .env("TICKETNEST_HTTP_ADDR", "127.0.0.1:0")
        .env("TICKETNEST_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
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

/// Runs the real binary with every log line of every crate (`trace`, JSON), signs up,
/// logs in, creates a goods as an organizer and books with a Bearer token and with the
/// login cookie, then checks everything it wrote: no password, token or password hash
/// anywhere, and handler lines carry the request id that the response echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_request_ids_and_never_passwords_or_tokens() {
    use serde_json::{json, Value};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let db = test_support::TestDatabase::new().await;
    let redis = test_support::TestRedis::new();
    let mut child = pub_api(&db, &redis)
        .env("TICKETNEST_JWT_SECRET", test_support::TEST_JWT_SECRET)
        .env("TICKETNEST_ARGON2_MEMORY_KIB", "8")
        .env("TICKETNEST_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "trace")
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
    // Read everything it writes from now on, while the test talks to it: at `trace`
    // it writes more than a pipe holds.
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line);
        }
        log
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
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
    // An organizer's goods, booked with the token and with the cookie login sets.
    let user_id: i64 = db
        .client()
        .await
        .query_one("SELECT id FROM users WHERE email = 'log@example.com'", &[])
        .await
        .expect("the user")
        .get(0);
    test_support::make_organizer(&db, user_id).await;
    let relogin = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "log@example.com", "password": password}))
        .send()
        .await
        .expect("login");
    let cookie = relogin
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("the login cookie")
        .to_owned();
    let organizer: Value = relogin.json().await.expect("json");
    let organizer_token = organizer["accessToken"].as_str().expect("token").to_owned();
    let created: Value = http
        .post(format!("{base}/api/goods"))
        .bearer_auth(&organizer_token)
        .json(
            &json!({"title": "Logged", "content": "", "price": 1, "imgUrl": "",
            "showDate": "2030-01-01T00:00:00Z", "bookingLimit": 10, "maxPerBooking": 2}),
        )
        .send()
        .await
        .expect("create goods")
        .json()
        .await
        .expect("json");
    let goods_id = created["id"].as_i64().expect("goods id");
    let booked = http
        .post(format!("{base}/api/goods/{goods_id}/bookings"))
        .bearer_auth(&organizer_token)
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .expect("book");
    assert_eq!(booked.status(), reqwest::StatusCode::ACCEPTED);
    let by_cookie = http
        .delete(format!("{base}/api/booking/{goods_id}"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("cancel by cookie");
    assert_eq!(by_cookie.status(), reqwest::StatusCode::ACCEPTED);

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().expect("pid").to_string()])
        .status()
        .expect("kill");
    let log = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("pub-api stopped")
        .expect("log reader");
    let status = child.wait().await.expect("wait");
    assert_eq!(status.code(), Some(0), "graceful exit");

    let all = log.join("\n");
    assert!(all.lines().count() > 100, "trace logs were captured");
    assert!(!all.contains(password), "a password reached the log");
    for secret in [&token, &organizer_token] {
        assert!(!all.contains(secret.as_str()), "a token reached the log");
        // Not even the signature alone (the part that makes a token usable).
        let signature = secret.rsplit('.').next().expect("a JWT");
        assert!(
            !all.contains(signature),
            "a token's signature reached the log"
        );
    }
    assert!(!all.contains("$argon2"), "a password hash reached the log");
    let signed_up = log
        .iter()
        .find(|l| l.contains("user signed up"))
        .expect("signup logged");
    assert!(signed_up.contains(&signup_id), "{signed_up}");
    assert!(log.iter().any(|l| l.contains("request finished")));
}

/// Started while its Redis is down, pub-api answers at once: `/healthz` 200, `/readyz`
/// 503 naming what it waits for, `/metrics`, and `503 starting` for the API; once Redis
/// is up, it is ready and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_redis_it_answers_probes_at_once_and_serves_once_redis_is_up() {
    use serde_json::Value;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let db = test_support::TestDatabase::new().await;
    let mut server = test_support::servers::RedisServer::start(false).await;
    let redis = test_support::TestRedis::on(server.url());
    server.kill().await;
    let mut child = pub_api(&db, &redis)
        .env("TICKETNEST_REDIS_TIMEOUT_MS", "300")
        .env("RUST_LOG", "info")
        .spawn()
        .expect("spawn pub-api");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(port) = parsed["fields"]["port"].as_u64() {
                return port;
            }
        }
        panic!("pub-api exited before binding");
    })
    .await
    .expect("pub-api bound");
    // Keep reading its log, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("http://127.0.0.1:{port}");
    // No pooled connections: one kept from the probe's time would be closed at the
    // handover under a request.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            let response = request.send().await.expect("an answer");
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let text = response.text().await.expect("body");
            (status, text, retry_after)
        }
    };
    let (status, body, _) = get("/healthz").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    // PostgreSQL answers at once; the wait is for Redis.
    test_support::wait_until(
        "readyz names the queue",
        Duration::from_secs(20),
        || async {
            let (_, body, _) = get("/readyz").await;
            body.contains("queue unavailable")
        },
    )
    .await;
    let (status, body, _) = get("/readyz").await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["error"]["code"], "not_ready");
    let (status, body, retry_after) = get("/api/goods").await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["error"]["code"],
        "starting"
    );
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (status, _, _) = get("/metrics").await;
    assert_eq!(status, reqwest::StatusCode::OK);

    server.start_again().await;
    test_support::wait_until(
        "ready once Redis is up",
        Duration::from_secs(30),
        || async { get("/readyz").await.0 == reqwest::StatusCode::OK },
    )
    .await;
    let (status, body, _) = get("/api/goods").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body, "[]");
    let (status, _, _) = get("/healthz").await;
    assert_eq!(status, reqwest::StatusCode::OK);
}

//! ticketnest-load against a real stack: the API and a worker in-process, the tool as
//! its real binary (a sale, and a ramp with the driver's ceiling).

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use test_support::{stack::Stack, TestDatabase};

/// The API and a worker in-process (this crate has no worker binary to start).
async fn stack() -> Stack {
    let stack = Stack::builder().spawn().await;
    stack.in_process_worker().await;
    stack
}

async fn load(db: &TestDatabase, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketnest-load"))
        .args(args)
        .env("TICKETNEST_DATABASE_URL", db.url())
        .env("TICKETNEST_JWT_SECRET", test_support::TEST_JWT_SECRET)
        .env("TICKETNEST_ARGON2_MEMORY_KIB", "8")
        .env("TICKETNEST_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("ticketnest-load finished")
        .expect("run ticketnest-load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_sale_reports_counts_that_match_postgres_and_a_complete_json_report() {
    let stack = stack().await;
    let dir = std::env::temp_dir().join(format!("tn-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("report.json");
    let plot = dir.join("report.svg");
    let output = load(
        &stack.db,
        &[
            "sale",
            "--url",
            &stack.address,
            "--users",
            "2000",
            "--seats",
            "100",
            "--concurrency",
            "32",
            "--json",
            json.to_str().expect("utf8"),
            "--plot",
            plot.to_str().expect("utf8"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("correctness     OK"), "{stdout}");

    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json file")).expect("json");
    for field in [
        "offered_per_s",
        "accept_per_s",
        "accept_latency_ms",
        "statuses",
        "decide_latency_ms",
        "decide_per_s",
        "decided_after_send",
        "decide_after_send_per_s",
        "drain_s",
        "peak_backlog",
        "outcomes",
        "correct",
        "breaches",
        "timeline",
    ] {
        assert!(
            report.get(field).is_some(),
            "report lacks {field}: {report}"
        );
    }
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["accept_latency_ms"][p]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{p}"
        );
    }
    for p in ["p50", "p99", "max"] {
        assert!(
            report["decide_latency_ms"][p]
                .as_f64()
                .is_some_and(|v| v >= 0.0),
            "{p}"
        );
    }
    for status in [
        "accepted_202",
        "client_4xx",
        "unavailable_503",
        "server_5xx",
        "timeouts",
        "transport_errors",
    ] {
        assert!(report["statuses"][status].is_u64(), "{status}");
    }
    assert_eq!(report["statuses"]["accepted_202"], 2000);
    assert_eq!(report["correct"], true);

    // The report's counts are PostgreSQL's.
    let goods = report["goods_id"].as_i64().expect("goods");
    let client = stack.db.client().await;
    let count = |decision: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM booking_requests WHERE goods_id = $1 AND decision = $2",
                    &[&goods, &decision],
                )
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(report["outcomes"]["confirmed"], count("confirmed").await);
    assert_eq!(report["outcomes"]["waitlisted"], count("waitlisted").await);
    assert_eq!(
        report["outcomes"]["decided"],
        count("confirmed").await + count("waitlisted").await + count("rejected").await
    );
    assert_eq!(report["outcomes"]["confirmed"], 100);
    assert_eq!(report["outcomes"]["waitlisted"], 1900);
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.contains("<svg") && svg.contains("accepted/s"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Several bookings per user: each user's first is decided like any booking, the rest
/// `already_booked`, and the correctness check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_bookings_per_user_are_decided_already_booked_and_the_check_passes() {
    let stack = Stack::builder()
        .api_config(|config| config.http.user_rate = None)
        .spawn()
        .await;
    stack.in_process_worker().await;
    let dir = std::env::temp_dir().join(format!("tn-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("report.json");
    let output = load(
        &stack.db,
        &[
            "sale",
            "--url",
            &stack.address,
            "--users",
            "50",
            "--bookings-per-user",
            "4",
            "--seats",
            "30",
            "--concurrency",
            "8",
            "--json",
            json.to_str().expect("utf8"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("correctness     OK"), "{stdout}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json file")).expect("json");
    assert_eq!(report["bookings_per_user"], 4);
    assert_eq!(report["statuses"]["accepted_202"], 200);
    assert_eq!(report["outcomes"]["decided"], 200);
    // Each user's first booking holds a place (30 seats, 20 in line); all others are
    // `already_booked`.
    assert_eq!(report["outcomes"]["confirmed"], 30);
    assert_eq!(report["outcomes"]["waitlisted"], 20);
    assert_eq!(report["outcomes"]["rejected"], 150);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_remote_target_is_refused_without_allow_remote() {
    // No stack at all: the guard must refuse before touching anything.
    let db = TestDatabase::new().await;
    let output = load(
        &db,
        &[
            "sale",
            "--url",
            "http://10.20.30.40:8080",
            "--users",
            "1",
            "--seats",
            "1",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
    let users = db.count("users").await;
    assert_eq!(users, 0, "nothing was prepared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_reports_the_drivers_ceiling_and_judges_the_knee_by_it() {
    let stack = stack().await;
    let dir = std::env::temp_dir().join(format!("tn-ramp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("ramp.json");
    // Two booking steps (200 and 400 req/s) under a loose SLO reach --max-rate; the
    // ceiling climb starts at the knee and reaches it at once: "at least 400", not
    // twice the knee, so the knee is the driver's.
    let output = load(
        &stack.db,
        &[
            "ramp",
            "--url",
            &stack.address,
            "--start-rate",
            "200",
            "--factor",
            "2",
            "--max-rate",
            "400",
            "--step-secs",
            "1",
            "--slo-p99-ms",
            "2000",
            "--connections",
            "8",
            "--json",
            json.to_str().expect("utf8"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("driver ceiling: at least 400 req/s"),
        "{stdout}"
    );
    assert!(stdout.contains("knee: not established"), "{stdout}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json file")).expect("json");
    assert_eq!(report["workload"], "bookings");
    assert_eq!(report["knee_per_s"], 400.0);
    assert_eq!(report["max_rate_reached"], true);
    assert_eq!(report["driver_ceiling_per_s"], 400.0);
    assert_eq!(report["driver_ceiling_at_least"], true);
    assert_eq!(report["driver_ceiling_ratio_to_knee"], 1.0);
    assert_eq!(report["knee_limited_by_driver"], true);
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["statuses"]["accepted_202"], 200);
    assert!(steps[0]["driver_cpu_cores"].as_f64().is_some());
    let ceiling = report["driver_ceiling"]["steps"]
        .as_array()
        .expect("ceiling steps");
    assert_eq!(ceiling.len(), 1);
    assert_eq!(ceiling[0]["offered_per_s"], 400.0);
    assert_eq!(
        ceiling[0]["statuses"]["accepted_202"], 400,
        "every /healthz a 200"
    );

    // The ceiling alone needs no database: no TICKETNEST_DATABASE_URL at all.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketnest-load"))
        .args([
            "ramp",
            "--target",
            "healthz",
            "--url",
            &stack.address,
            "--start-rate",
            "300",
            "--max-rate",
            "300",
            "--step-secs",
            "1",
            // Loose: the API under test is a debug build on a shared machine.
            "--slo-p99-ms",
            "2000",
        ])
        .env_remove("TICKETNEST_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run ticketnest-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("driver ceiling: at least 300 req/s"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

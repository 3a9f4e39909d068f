//! The operators' dashboard against a real Prometheus: `deploy/prometheus.yml`
//! (rewritten for this test's ports and a 1 s scrape interval) scrapes the API and a
//! worker through a small sale, and every query of `deploy/grafana/ticketnest.json`
//! must return data; the decisions Prometheus counted must be the ones PostgreSQL
//! holds.
//!
//! Prometheus is Debian's `/usr/bin/prometheus` (installed by `scripts/services.sh`),
//! started as a child process on a free port with its storage in a directory of its
//! own, killed and deleted when the test ends.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::StatusCode;
use serde_json::Value;
use test_support::{servers::free_port, wait_until};
use tokio::process::{Child, Command};

use crate::helpers::spawn_stack;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const SCRAPE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus.yml");
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/ticketnest.json"
);
/// The scrape interval (and timeout, and rule evaluation interval) in the test.
const INTERVAL: &str = "1s";
/// What Grafana's range variables become in the test's queries: wide enough for
/// several 1 s scrapes, so `rate()` has two samples.
const RANGE: &str = "1m";
/// How long Prometheus may take to start, and to see what a test waits for.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_has_data_and_prometheus_counts_the_decisions_postgres_holds() {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: run scripts/services.sh (it installs Debian's prometheus \
         package; scripts/test.sh runs it first)"
    );
    let stack = spawn_stack().await;
    let worker_port = free_port();
    let _worker = stack.worker(&[(
        "TICKETNEST_WORKER_HTTP_ADDR",
        &format!("127.0.0.1:{worker_port}"),
    )]);
    let api = stack
        .address
        .strip_prefix("http://")
        .expect("the stack's address is http://host:port");
    let config = scrape_config(
        &std::fs::read_to_string(SCRAPE_CONFIG).expect("reading deploy/prometheus.yml"),
        api,
        &format!("127.0.0.1:{worker_port}"),
    );
    let prometheus = Prometheus::start(&config).await;

    // Both targets are scraped: the rewritten config points at this test's processes.
    for job in ["ticketnest-api", "ticketnest-worker"] {
        let up = format!("up{{job=\"{job}\"}}");
        wait_until(
            &format!("Prometheus scraping {job} ({up} == 1)"),
            PROMETHEUS_DEADLINE,
            || async { prometheus.values(&up).await == [1.0] },
        )
        .await;
    }

    // A small sale: 50 fans for 20 seats, and one bad request (the errors panel).
    let goods = stack.create_goods(20, 1).await;
    let fans = stack.customers("dash", 50).await;
    stack.book_all(goods, &fans, 8).await;
    let (status, _) = crate::helpers::parts(stack.get("/api/goods/0", None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    stack.wait_for_decisions(50).await;
    // Decisions are counted at COMMIT, before the acknowledgement: none is left to
    // count once nothing is pending.
    stack.wait_until_nothing_pending().await;
    let counted_by = unix_seconds();

    // (a) Every query of the dashboard returns data.
    let queries = dashboard_queries(
        &serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("reading the dashboard"))
            .expect("the dashboard is JSON"),
    );
    assert!(queries.len() >= 20, "a dashboard this size: {queries:#?}");
    // Polled until each has answered once, naming the ones that never did.
    let mut without_data: BTreeSet<String> = queries.into_iter().collect();
    let deadline = tokio::time::Instant::now() + PROMETHEUS_DEADLINE;
    loop {
        let mut still = BTreeSet::new();
        for query in without_data {
            if prometheus.query(&query).await.is_empty() {
                still.insert(query);
            }
        }
        without_data = still;
        if without_data.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dashboard queries still without data after {PROMETHEUS_DEADLINE:?}: {without_data:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // (b) Once Prometheus has scraped the worker after the last decision, the
    // decisions it counted are those in PostgreSQL.
    wait_until(
        "a scrape of the worker after the sale",
        PROMETHEUS_DEADLINE,
        || async {
            prometheus
                .values("timestamp(up{job=\"ticketnest-worker\"})")
                .await
                .first()
                .is_some_and(|at| *at > counted_by)
        },
    )
    .await;
    let decided = stack.decided_count().await;
    assert_eq!(decided, 50);
    #[allow(clippy::cast_precision_loss)] // 50
    let decided = decided as f64;
    assert_eq!(
        prometheus.values("sum(ticketnest_decisions_total)").await,
        [decided],
        "ticketnest_decisions_total summed over the worker"
    );
    assert_eq!(
        prometheus
            .values("sum(ticketnest_decisions_total{outcome=\"confirmed\"})")
            .await,
        [20.0],
        "20 seats"
    );
    assert_eq!(
        prometheus
            .values("max by (shard) (ticketnest_shard_owned) == 1")
            .await
            .len(),
        usize::try_from(stack.shards).expect("shards"),
        "the worker owns every shard"
    );
}

/// `deployed` (deploy/prometheus.yml) scraping `api` and `worker` (host:port) instead,
/// every `INTERVAL`. Panics when the file's layout is not the one this rewrites: each
/// job's targets on one `- targets: [...]` line.
fn scrape_config(deployed: &str, api: &str, worker: &str) -> String {
    let mut job = None;
    let mut targets_rewritten = Vec::new();
    let mut intervals_rewritten = 0;
    let mut out = String::new();
    for line in deployed.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(name) = trimmed.strip_prefix("- job_name:") {
            job = Some(name.trim().trim_matches(['"', '\'']).to_owned());
        }
        let key = trimmed.split(':').next().unwrap_or_default();
        if trimmed.starts_with("- targets:") {
            let target = match job.as_deref() {
                Some("ticketnest-api") => api,
                Some("ticketnest-worker") => worker,
                other => panic!("deploy/prometheus.yml: targets of an unknown job {other:?}"),
            };
            targets_rewritten.extend(job.clone());
            out.push_str(&format!("{indent}- targets: [\"{target}\"]\n"));
        } else if matches!(
            key,
            "scrape_interval" | "scrape_timeout" | "evaluation_interval"
        ) {
            intervals_rewritten += 1;
            out.push_str(&format!("{indent}{key}: {INTERVAL}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(
        targets_rewritten,
        ["ticketnest-api", "ticketnest-worker"],
        "deploy/prometheus.yml: one `- targets: [...]` line per job, API then worker"
    );
    assert!(
        intervals_rewritten >= 1,
        "deploy/prometheus.yml sets no scrape_interval"
    );
    out
}

/// Every panel's query in a Grafana dashboard (rows' nested panels included), with
/// Grafana's range variables replaced by [`RANGE`]. Panics on any other variable: the
/// test would not know what to put there.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn collect(panels: &Value, into: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            collect(&panel["panels"], into);
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a query without expr in panel {}", panel["title"]));
                into.push(expr.to_owned());
            }
        }
    }
    let mut exprs = Vec::new();
    collect(&dashboard["panels"], &mut exprs);
    exprs
        .into_iter()
        .map(|expr| {
            let expr = [
                "${__rate_interval}",
                "$__rate_interval",
                "${__interval}",
                "$__interval",
                "${__range}",
                "$__range",
            ]
            .iter()
            .fold(expr, |expr, variable| expr.replace(variable, RANGE));
            assert!(
                !expr.contains('$'),
                "a dashboard query with a variable this test does not fill in: {expr}"
            );
            expr
        })
        .collect()
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A Prometheus server of the test's own: killed, and its directory deleted, on drop.
struct Prometheus {
    base: String,
    http: reqwest::Client,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus with `config` on a free port and waits until it is ready.
    async fn start(config: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ticketnest-prometheus-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("creating Prometheus's directory");
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("writing prometheus.yml");
        // Its log goes to a file, never to a pipe nobody reads (a full pipe blocks it).
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning prometheus");
        let prometheus = Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            dir,
            child,
        };
        let ready = format!("{}/-/ready", prometheus.base);
        let deadline = tokio::time::Instant::now() + PROMETHEUS_DEADLINE;
        loop {
            let answer = prometheus.http.get(&ready).send().await;
            if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
                return prometheus;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus not ready after {PROMETHEUS_DEADLINE:?}; its log:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The samples of an instant query now (`/api/v1/query`); panics when Prometheus
    /// refuses the query (a typo in the dashboard fails at once, not at the deadline).
    async fn query(&self, query: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", query)])
            .send()
            .await
            .expect("asking Prometheus");
        let body: Value = response.json().await.expect("Prometheus answers JSON");
        assert_eq!(body["status"], "success", "{query}: {body}");
        assert_eq!(body["data"]["resultType"], "vector", "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .expect("a vector result")
            .clone()
    }

    /// The values of an instant query's samples.
    async fn values(&self, query: &str) -> Vec<f64> {
        self.query(query)
            .await
            .iter()
            .map(|sample| {
                sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{query}: a sample without a value: {sample}"))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! Private, throwaway PostgreSQL and Redis servers for tests that stop, restart or kill
//! a server.
//!
//! Most tests share the PostgreSQL on 5432 and the Redis on 6379 (see [`crate::TestDatabase`]
//! and [`crate::TestRedis`]). Tests run in parallel in separate processes, so a test that
//! restarted or killed one of those shared servers would break every other test running
//! at the same time. A test that needs to do that starts its own server here instead:
//!
//! * [`PgServer`]: a fresh cluster (`initdb` into a unique temp dir, run as the `postgres`
//!   OS user when the tests run as root) on a free port, listening on 127.0.0.1 only.
//! * [`RedisServer`]: a `redis-server` child process on a free port in a unique temp dir,
//!   optionally with an append-only file fsynced on every write.
//!
//! Ports are picked at runtime (bind `127.0.0.1:0`, read the port, release it), every
//! wait is bounded by a deadline, and failures panic with the server's log (this is test
//! code). Dropping a server stops it and removes its directory without needing an async
//! runtime.

use std::{
    net::{Ipv4Addr, TcpListener},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use tokio_postgres::NoTls;

/// Pause between two polls of a server.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long PostgreSQL gets to start or stop.
const PG_DEADLINE: Duration = Duration::from_secs(30);
/// How long Redis gets to start or die.
const REDIS_DEADLINE: Duration = Duration::from_secs(10);
/// Bound on a single connection attempt while polling.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many fresh ports a first start tries when the port it picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A free TCP port on 127.0.0.1 (free when this returns; the server binds it right after).
/// A port free on 127.0.0.1 a moment ago (for a server a test starts itself).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("reading the port of the free-port listener")
        .port()
}

/// A new, empty directory under the system temp dir, unique to this server.
fn unique_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ticketnest-{kind}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("creating temp dir {}: {e}", dir.display()));
    dir
}

/// The last lines of a log file, for panic messages.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn output_text(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// Whether a log says a server could not bind its port because it is taken.
fn port_taken(log: &str) -> bool {
    log.contains("already in use")
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// Whether this process runs as root (then PostgreSQL must run as the `postgres` user).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The highest-versioned `/usr/lib/postgresql/<version>/bin` directory.
fn pg_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("listing {} for PostgreSQL binaries: {e}", root.display()));
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL version with bin/pg_ctl under {}",
                root.display()
            )
        })
}

/// A command running `program` as the `postgres` OS user when we are root (via
/// `runuser`), else as ourselves. It runs in `cwd` so the `postgres` user never trips over
/// a working directory it cannot read.
fn pg_command(program: &Path, cwd: &Path) -> Command {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir(cwd).stdin(Stdio::null());
    command
}

/// Connects to `url` once, bounded by [`ATTEMPT_TIMEOUT`].
async fn pg_try_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, tokio_postgres::connect(url, NoTls)).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {ATTEMPT_TIMEOUT:?}")),
    }
}

/// A private PostgreSQL cluster on a free port, stopped and deleted on drop.
///
/// The data directory, the Unix socket and the server log all live in one temp dir owned
/// by the `postgres` OS user. Authentication is `trust` for the `postgres` superuser.
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PgServer {
    /// Creates a cluster with `initdb` (as the `postgres` OS user, `-A trust -U postgres
    /// --no-sync`) in a fresh temp dir, starts it with `pg_ctl` on a free port listening on
    /// 127.0.0.1 only (fsync off), and waits until it accepts connections.
    ///
    /// Panics, with the server log, if any step fails.
    pub async fn start() -> Self {
        let bin = pg_bin_dir();
        let dir = unique_dir("pg");
        // Build the server value first so that Drop cleans up the dir if anything panics.
        let mut server = PgServer { port: 0, dir, bin };

        if running_as_root() {
            let output = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir)
                .output()
                .expect("running chown on the PostgreSQL temp dir");
            assert!(
                output.status.success(),
                "chown postgres:postgres {} failed: {}",
                server.dir.display(),
                output_text(&output)
            );
        }

        let output = pg_command(&server.bin.join("initdb"), &server.dir)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(server.data_dir())
            .output()
            .expect("running initdb");
        assert!(
            output.status.success(),
            "initdb into {} failed: {}",
            server.data_dir().display(),
            output_text(&output)
        );

        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            match server.pg_ctl_start().await {
                Ok(()) => {
                    server.wait_until_accepting().await;
                    return server;
                }
                Err(message) if attempt < PORT_ATTEMPTS && port_taken(&message) => continue,
                Err(message) => panic!("{message}"),
            }
        }
        unreachable!("the last port attempt either returns or panics")
    }

    /// The port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the database `db` on this server: `postgres://postgres@127.0.0.1:PORT/{db}`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates the database `db` (quoted as an identifier, so its name is used verbatim).
    pub async fn create_database(&self, db: &str) {
        let url = self.url("postgres");
        let client = pg_try_connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url} to create database {db}: {e}"));
        let quoted = db.replace('"', "\"\"");
        client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {db} on port {}: {e}", self.port));
    }

    /// Stops the server (`pg_ctl stop -m fast`) and waits until it no longer accepts
    /// connections.
    pub async fn stop(&self) {
        let mut command = pg_command(&self.bin.join("pg_ctl"), &self.dir);
        command
            .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
            .arg(self.data_dir());
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .expect("running pg_ctl stop");
        assert!(
            output.status.success(),
            "pg_ctl stop (port {}) failed: {}\nserver log:\n{}",
            self.port,
            output_text(&output),
            log_tail(&self.log_file())
        );

        let url = self.url("postgres");
        let deadline = Instant::now() + PG_DEADLINE;
        while pg_try_connect(&url).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} still accepts connections {PG_DEADLINE:?} after pg_ctl stop",
                self.port
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Starts the server again on the same port and data dir and waits until it accepts
    /// connections.
    pub async fn start_again(&self) {
        if let Err(message) = self.pg_ctl_start().await {
            panic!("{message}");
        }
        self.wait_until_accepting().await;
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub async fn restart(&self) {
        self.stop().await;
        self.start_again().await;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// `pg_ctl start` on `self.port`; the error carries pg_ctl's output and the log tail.
    async fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut command = pg_command(&self.bin.join("pg_ctl"), &self.dir);
        command
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .arg("-o")
            .arg(options);
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .expect("running pg_ctl start");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start (port {}, dir {}) failed: {}\nserver log:\n{}",
                self.port,
                self.dir.display(),
                output_text(&output),
                log_tail(&self.log_file())
            ))
        }
    }

    /// Polls until a connection to the `postgres` database succeeds, or panics.
    async fn wait_until_accepting(&self) {
        let url = self.url("postgres");
        let deadline = Instant::now() + PG_DEADLINE;
        loop {
            let error = match pg_try_connect(&url).await {
                Ok(_) => return,
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} did not accept connections within {PG_DEADLINE:?} \
                 (last error: {error})\nserver log:\n{}",
                self.port,
                log_tail(&self.log_file())
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for PgServer {
    /// Stops the server with `pg_ctl stop -m immediate` and removes its directory, ignoring
    /// errors (it may already be stopped, or never have started).
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = pg_command(&self.bin.join("pg_ctl"), &self.dir)
                .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
                .arg(self.data_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

/// A private `redis-server` child process on a free port, killed and deleted on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    aof: bool,
    /// Extra `redis-server` arguments (cluster mode).
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port bound to 127.0.0.1, in a fresh temp dir, with
    /// no RDB snapshots and, when `aof` is true, an append-only file fsynced on every write
    /// (`--appendonly yes --appendfsync always`). Waits until it answers `PING`.
    ///
    /// Panics, with the server log, if it does not come up.
    pub async fn start(aof: bool) -> Self {
        let dir = unique_dir("redis");
        let mut server = RedisServer {
            port: 0,
            dir,
            aof,
            extra: Vec::new(),
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(message) if attempt < PORT_ATTEMPTS && port_taken(&message) => continue,
                Err(message) => panic!("{message}"),
            }
        }
        unreachable!("the last port attempt either returns or panics")
    }

    /// The port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sets `maxmemory` to `percent` of the memory the server uses now (below 100: every
    /// write that grows memory is refused from now on, as when Redis is full).
    ///
    /// # Panics
    /// If the server does not answer.
    pub async fn limit_memory_to(&self, percent: u64) {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis");
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .expect("info");
        let used = shared::queue::ServerInfo::parse(&info).used_memory;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(used * percent / 100)
            .query_async(&mut conn)
            .await
            .expect("config set maxmemory");
    }

    /// Stops the server with SIGSTOP for `how_long`, then lets it go on with SIGCONT:
    /// clients see timeouts and lost replies, keys expire on its wall clock meanwhile.
    ///
    /// # Panics
    /// If the server is not running or the signals cannot be sent.
    pub async fn pause(&self, how_long: Duration) {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("RedisServer::pause while the server is not running");
        let signal = |name: &str| {
            let sent = Command::new("kill")
                .args([format!("-{name}"), pid.to_string()])
                .status()
                .expect("run kill");
            assert!(sent.success(), "kill -{name} {pid}");
        };
        signal("STOP");
        tokio::time::sleep(how_long).await;
        signal("CONT");
    }

    /// Kills the server with SIGKILL (a crash: nothing is saved on the way down) and waits
    /// until the process is gone and the port refuses connections.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means the process already exited; try_wait below reaps it.
            let _ = child.kill();
            let deadline = Instant::now() + REDIS_DEADLINE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) => {}
                    Err(e) => panic!("waiting for killed redis-server (port {}): {e}", self.port),
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server (port {}) still running {REDIS_DEADLINE:?} after SIGKILL",
                    self.port
                );
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }

        let deadline = Instant::now() + REDIS_DEADLINE;
        while let Ok(Ok(_)) = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)),
        )
        .await
        {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts connections {REDIS_DEADLINE:?} after killing redis-server",
                self.port
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Starts the server again with the same port, dir and options (so an append-only
    /// file in the dir is reloaded) and waits until it answers `PING`.
    pub async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "RedisServer::start_again on port {} while the server is still running",
            self.port
        );
        if let Err(message) = self.spawn_and_wait().await {
            panic!("{message}");
        }
    }

    /// [`kill`](Self::kill), then [`start_again`](Self::start_again).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start_again().await;
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Spawns `redis-server` on `self.port` and polls `PING` until it answers. On failure
    /// the child is killed and the error carries the log tail.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(self.log_file())
            .arg("--dir")
            .arg(&self.dir);
        if self.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        command.args(&self.extra);
        let child = command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server (is it on PATH?)");
        self.child = Some(child);

        let url = self.url();
        let deadline = Instant::now() + REDIS_DEADLINE;
        loop {
            let error = match redis_ping(&url).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server (port {}, dir {}) exited with {status} before answering \
                         PING\nserver log:\n{}",
                        self.port,
                        self.dir.display(),
                        log_tail(&self.log_file())
                    ));
                }
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(format!(
                    "redis-server (port {}) did not answer PING within {REDIS_DEADLINE:?} \
                     (last error: {error})\nserver log:\n{}",
                    self.port,
                    log_tail(&self.log_file())
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// One `PING`, bounded by [`ATTEMPT_TIMEOUT`].
async fn redis_ping(url: &str) -> Result<(), String> {
    let attempt = async {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let pong = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {ATTEMPT_TIMEOUT:?}")))
}

impl Drop for RedisServer {
    /// Kills the server if it is running and removes its directory, ignoring errors.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------

/// A free port whose cluster bus port (`port + 10000`) is free too.
fn free_cluster_port() -> u16 {
    use rand_port::next;
    for _ in 0..200 {
        let port = next();
        let both = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .and_then(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)));
        if both.is_ok() {
            return port;
        }
    }
    panic!("no free port pair (port, port + 10000) found for a cluster node");
}

/// Ports for cluster nodes, spread over 20000..45000 so parallel tests rarely collide.
mod rand_port {
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    pub fn next() -> u16 {
        let seed = u32::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..4]
                .try_into()
                .unwrap_or([0; 4]),
        );
        let n = seed.wrapping_add(COUNTER.fetch_add(7919, Ordering::Relaxed));
        20_000 + u16::try_from(n % 25_000).unwrap_or(0)
    }
}

/// A private Redis Cluster of `masters` nodes (no replicas), each a [`RedisServer`] in
/// cluster mode, created with `redis-cli --cluster create`. Killed and deleted on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok`.
    pub async fn start(masters: usize) -> Self {
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            let mut node = RedisServer {
                port: free_cluster_port(),
                dir: unique_dir("redis-cluster"),
                aof: false,
                extra: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-node-timeout".into(),
                    "5000".into(),
                ],
                child: None,
            };
            if let Err(message) = node.spawn_and_wait().await {
                panic!("{message}");
            }
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let create = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), create)
            .await
            .expect("redis-cli --cluster create finished")
            .expect("running redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            output_text(&output)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            loop {
                if cluster_state_ok(&node.url()).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} never reached cluster_state:ok",
                    node.port
                );
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        cluster
    }

    /// The seed URLs, comma-separated, as `TICKETNEST_REDIS_URL` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

async fn cluster_state_ok(url: &str) -> bool {
    let attempt = async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(info.contains("cluster_state:ok"))
    };
    matches!(
        tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}

// ---------------------------------------------------------------------------------------
// HAProxy
// ---------------------------------------------------------------------------------------

/// A private HAProxy (from Debian's `haproxy` package) balancing HTTP round-robin over
/// local backends, with `/readyz` health checks. Killed and deleted on drop.
pub struct HaProxy {
    port: u16,
    stats: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl HaProxy {
    /// Starts HAProxy in front of `backends` (ports on 127.0.0.1) and waits until it
    /// accepts connections and sees every backend up.
    pub async fn start(backends: &[u16]) -> Self {
        let dir = unique_dir("haproxy");
        let port = free_port();
        let stats = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!("    server api{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 1\n")
            })
            .collect();
        let config = format!(
            "global\n    maxconn 4096\n\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 40s\n    timeout server 40s\n\n\
             frontend ticketnest\n    bind 127.0.0.1:{port}\n    default_backend pub_api\n\n\
             backend pub_api\n    balance roundrobin\n    option httpchk GET /readyz\n{servers}\n\
             listen stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("writing haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning haproxy (scripts/services.sh installs it)");
        let proxy = Self {
            port,
            stats,
            dir,
            child: Some(child),
        };
        // Up when the stats page lists every backend server as UP.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let csv = http_get(stats, "/stats;csv").await.unwrap_or_default();
            let up = csv
                .lines()
                .filter(|l| l.starts_with("pub_api,api") && l.contains(",UP,"))
                .count();
            if up == backends.len() {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy never saw its backends up: {csv}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests each backend has served so far (HAProxy's `stot`), in backend order.
    pub async fn served(&self) -> Vec<u64> {
        let csv = http_get(self.stats, "/stats;csv").await.unwrap_or_default();
        let mut rows: Vec<(String, u64)> = csv
            .lines()
            .filter(|l| l.starts_with("pub_api,api"))
            .filter_map(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                Some((cols.get(1)?.to_string(), cols.get(7)?.parse().ok()?))
            })
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, n)| n).collect()
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 returning the body, for polling HAProxy's stats
/// without an HTTP client dependency.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

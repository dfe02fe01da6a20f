//! Running changeflow in tests: a configuration for one test database, and the real binary
//! as a child process (for signals: SIGTERM, SIGKILL).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use changeflow::config::{Config, WatchedDatabase};
use mongodb::bson::{Document, doc};

use super::{DEADLINE, kafka_brokers, mongodb_uri, wait_until};

/// Configuration for a test: watches `database`.payments only, keeps all state in
/// `database`, publishes to topics prefixed `<database>.`, provider latency 0, checkpoints
/// every 100 ms, HTTP on a free port.
pub fn config(database: &str) -> Config {
    let mut config = Config::default();
    config.mongodb.uri = mongodb_uri();
    config.kafka.brokers = kafka_brokers();
    config.kafka.topic_prefix = format!("{database}.");
    config.kafka.partitions = 3;
    config.watch = vec![WatchedDatabase {
        database: database.to_owned(),
        collections: vec!["payments".to_owned()],
    }];
    config.payments.database = database.to_owned();
    config.checkpoint.database = database.to_owned();
    config.checkpoint.every_ms = 100;
    config.provider.latency_ms = 0;
    config.http.address = "127.0.0.1:0".to_owned();
    // A restart after a SIGKILL waits for the dead process's lease to expire.
    config.lease.ttl_ms = 2_000;
    config.lease.renew_ms = 500;
    config
}

/// [`config`] with Kafka as the only target of every event kind: nothing settles the
/// payments behind the test's back.
pub fn kafka_only_config(database: &str) -> Config {
    let mut config = config(database);
    let kafka = vec!["kafka".to_owned()];
    config.routes.payment_requested = kafka.clone();
    config.routes.payment_confirmed = kafka.clone();
    config.routes.payment_failed = kafka.clone();
    config.routes.payment_updated = kafka.clone();
    config.routes.payment_deleted = kafka.clone();
    config.routes.payment_observed = kafka;
    config
}

/// [`config`] that also watches the agent-memory collections, kept in `database` too.
pub fn memory_config(database: &str) -> Config {
    let mut config = config(database);
    config.memory.database = database.to_owned();
    config.watch[0].collections.extend([
        config.memory.short_term.clone(),
        config.memory.episodic.clone(),
        config.memory.semantic.clone(),
    ]);
    config
}

/// `changeflow run` in this process with `config` (resuming from its checkpoints, or from
/// now), once every stream is open.
pub async fn start_ready(config: &Config) -> changeflow::cmd::run::Running {
    let running = changeflow::cmd::run::start(
        std::sync::Arc::new(config.clone()),
        changeflow::source::StartAt::Now,
    )
    .await
    .expect("starting changeflow");
    running.ready(DEADLINE).await.expect("streams open");
    running
}

/// A free local port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free local port: {e}"))
}

/// The changeflow binary running `run` with a configuration file.
pub struct Process {
    child: Child,
    /// Base URL of its HTTP API.
    pub base_url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `changeflow run` with `config` (its HTTP port replaced by a free one).
    pub fn spawn(config: &Config) -> Process {
        Process::spawn_with(config, &[])
    }

    /// [`Process::spawn`] with more arguments for `run` (e.g. `--role handlers`).
    pub fn spawn_with(config: &Config, args: &[&str]) -> Process {
        Process::start(config, args, None)
    }

    /// [`Process::spawn`] as if on host `host` (`CHANGEFLOW_HOST`), for instances that must
    /// not know each other's processes.
    pub fn spawn_on_host(config: &Config, host: &str) -> Process {
        Process::start(config, &[], Some(host))
    }

    fn start(config: &Config, args: &[&str], host: Option<&str>) -> Process {
        let mut config = config.clone();
        let port = free_port();
        config.http.address = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let file = dir.path().join("changeflow.toml");
        let text = toml::to_string(&config).unwrap_or_else(|e| panic!("config to TOML: {e}"));
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("writing {file:?}: {e}"));
        let log = dir.path().join("changeflow.log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{log:?}: {e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_changeflow"));
        command.env_remove("CHANGEFLOW_HOST");
        if let Some(host) = host {
            command.env("CHANGEFLOW_HOST", host);
        }
        let child = command
            .arg("--config")
            .arg(&file)
            .arg("run")
            .args(args)
            .env("RUST_LOG", "changeflow=debug,info")
            .env_remove("CHANGEFLOW_CONFIG")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting changeflow: {e}"));
        Process {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, in MiB (VmRSS).
    pub fn rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// The value of the metric line starting with `series` (name and labels), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let url = format!("{}/metrics", self.base_url);
        let Ok(response) = reqwest::get(&url).await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// `/healthz`: its status code and body; None when it does not answer.
    pub async fn healthz(&self) -> Option<(u16, serde_json::Value)> {
        let response = reqwest::get(format!("{}/healthz", self.base_url))
            .await
            .ok()?;
        let code = response.status().as_u16();
        Some((code, response.json().await.unwrap_or_default()))
    }

    /// Waits for `/healthz` to answer with something other than 200 (for `what`, within
    /// `deadline`), and returns that answer.
    pub async fn wait_unhealthy(&self, deadline: Duration, what: &str) -> (u16, serde_json::Value) {
        wait_until(deadline, what, || async {
            let (code, body) = self.healthz().await?;
            (code != 200).then_some((code, body))
        })
        .await
    }

    /// Whether it has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers 200 (every stream open).
    pub async fn wait_healthy(&mut self) {
        let url = format!("{}/healthz", self.base_url);
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "changeflow exited ({status}) before it was healthy:\n{}",
                    self.log()
                );
            }
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < until,
                "changeflow not healthy after {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        super::signal(&self.child, signal);
    }

    /// Stops it with SIGTERM; it must exit successfully within [`DEADLINE`].
    pub async fn stop_cleanly(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(DEADLINE).await;
        assert!(
            status.success(),
            "changeflow exited {status}:\n{}",
            self.log()
        );
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Ok(None) => panic!(
                    "changeflow did not exit within {deadline:?}:\n{}",
                    self.log()
                ),
                Err(e) => panic!("waiting for changeflow: {e}"),
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A payment document as any writer could insert it.
pub fn payment(id: &str, product: usize, status: &str) -> Document {
    doc! {
        "_id": id,
        "amount": "10.50".parse::<mongodb::bson::Decimal128>().unwrap(),
        "status": status,
        "product": {"code": format!("product-{product}"), "name": format!("Product {product}")},
    }
}

/// Inserts `count` PENDING payments `{prefix}-0`, `{prefix}-1`… of `product`, one by one
/// (one change each, in order).
pub async fn insert_pending(
    payments: &mongodb::Collection<Document>,
    prefix: &str,
    count: usize,
    product: usize,
) {
    for i in 0..count {
        payments
            .insert_one(payment(&format!("{prefix}-{i}"), product, "PENDING"))
            .await
            .unwrap();
    }
}

/// Every document of `collection` in `db`.
pub async fn all_documents(db: &mongodb::Database, collection: &str) -> Vec<Document> {
    use futures::TryStreamExt;
    let cursor = db
        .collection::<Document>(collection)
        .find(doc! {})
        .await
        .unwrap_or_else(|e| panic!("reading {collection}: {e}"));
    cursor
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("reading {collection}: {e}"))
}

/// Per product code: (CONFIRMED, FAILED) payments, and the counters' (successful, failed).
pub async fn outcomes_and_counters(
    db: &mongodb::Database,
) -> (
    std::collections::BTreeMap<String, (i64, i64)>,
    std::collections::BTreeMap<String, (i64, i64)>,
) {
    let mut outcomes = std::collections::BTreeMap::new();
    let payments = all_documents(db, "payments").await;
    for p in payments {
        let code = p
            .get_document("product")
            .and_then(|d| d.get_str("code"))
            .unwrap_or("?")
            .to_owned();
        let entry: &mut (i64, i64) = outcomes.entry(code).or_default();
        match p.get_str("status") {
            Ok("CONFIRMED") => entry.0 += 1,
            Ok("FAILED") => entry.1 += 1,
            _ => {}
        }
    }
    let mut counters = std::collections::BTreeMap::new();
    let docs = all_documents(db, "payment_counters").await;
    for c in docs {
        let n = |f: &str| c.get_i64(f).unwrap_or(0);
        counters.insert(
            c.get_str("_id").unwrap_or("?").to_owned(),
            (n("successfulPayments"), n("failedPayments")),
        );
    }
    (outcomes, counters)
}

/// Waits until no payment in `db` is PENDING.
pub async fn wait_all_settled(db: &mongodb::Database, deadline: Duration) {
    let payments = db.collection::<Document>("payments");
    wait_until(deadline, "every payment settled", || async {
        let pending = payments
            .count_documents(doc! {"status": "PENDING"})
            .await
            .ok()?;
        (pending == 0).then_some(())
    })
    .await;
}

/// Waits until no payment is PENDING and the counters equal the payments' outcomes.
pub async fn wait_settled_and_counted(db: &mongodb::Database, deadline: Duration, phase: &str) {
    let payments = db.collection::<Document>("payments");
    let started = Instant::now();
    loop {
        let pending = payments
            .count_documents(doc! {"status": "PENDING"})
            .await
            .unwrap_or(u64::MAX);
        if pending == 0 {
            let (outcomes, counters) = outcomes_and_counters(db).await;
            if outcomes == counters {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "{phase}: counters differ from the outcomes after {deadline:?}\n\
                 outcomes {outcomes:?}\ncounters {counters:?}"
            );
        }
        assert!(
            started.elapsed() < deadline,
            "{phase}: {pending} payments still PENDING after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a finished `changeflow` command printed.
pub struct CliOutput {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error (logs and the error line).
    pub stderr: String,
}

/// The arguments of `checkpoint set --stream <stream> --time <at>` (add --yes, --force).
pub fn set_time_args<'a>(stream: &'a str, at: &'a str) -> Vec<&'a str> {
    vec!["checkpoint", "set", "--stream", stream, "--time", at]
}

/// Runs `changeflow --config <config> <args>` to its end (failing the test after 3 min).
pub async fn run_cli(config: &Config, args: &[&str]) -> CliOutput {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = dir.path().join("changeflow.toml");
    let text = toml::to_string(config).unwrap_or_else(|e| panic!("config to TOML: {e}"));
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("writing {file:?}: {e}"));
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_changeflow"))
        .arg("--config")
        .arg(&file)
        .args(args)
        .env("RUST_LOG", "changeflow=debug,info")
        .env_remove("CHANGEFLOW_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = super::within(
        Duration::from_secs(180),
        &format!("changeflow {args:?}"),
        run,
    )
    .await
    .unwrap_or_else(|e| panic!("running changeflow {args:?}: {e}"));
    CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Each user's `memory_stats` in `db`, as field → count (dotted for nested fields).
pub async fn memory_stats_by_user(
    db: &mongodb::Database,
) -> changeflow::cmd::demo::memory::Expected {
    all_documents(db, changeflow::targets::memory_stats::MEMORY_STATS)
        .await
        .iter()
        .map(|d| {
            let user = d.get_str("_id").unwrap_or("?").to_owned();
            (user, changeflow::cmd::demo::memory::counts_of(d))
        })
        .collect()
}

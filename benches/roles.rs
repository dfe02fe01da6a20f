//! Scaling the handlers out: the payments flow with a provider that takes 50 ms per call
//! and at most `provider.max_in_flight` calls at once per instance, so one instance is
//! bounded by the provider, not by the stream. Each mode gets its own database and topics:
//!
//! - `all`: one `changeflow run` (today's single process);
//! - `split×K`: one `--role capture` and K `--role handlers` instances, K = 1, 2, 3.
//!
//! `BENCH_PAYMENTS` (default 3000) PENDING payments are written once every instance is
//! ready; a mode is done when the counters hold every payment. Prints payments/s (each
//! payment is two handled events: the request and its outcome) and the ratio to `all`,
//! measured in one run. Needs the replica set and the broker (`cargo xtask up`).
//!
//!     cargo bench --bench roles

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use changeflow::config::Config;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Database};

mod common;

use common::{env_number, mongo, outcomes_counted, payments_config, pending_payment};

/// Provider calls at once, per instance.
const MAX_IN_FLIGHT: usize = 16;
const LATENCY_MS: u64 = 50;

/// A running `changeflow run`.
struct Instance {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Instance {
    fn spawn(config: &Config, role: &str) -> anyhow::Result<Instance> {
        let mut config = config.clone();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        config.http.address = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("changeflow.toml");
        std::fs::write(&file, toml::to_string(&config)?)?;
        let log = dir.path().join("changeflow.log");
        let child = Command::new(env!("CARGO_BIN_EXE_changeflow"))
            .arg("--config")
            .arg(&file)
            .args(["run", "--role", role])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting changeflow")?;
        Ok(Instance {
            child,
            log,
            _dir: dir,
        })
    }

    /// Waits until its log shows `line`.
    async fn wait_for(&mut self, line: &str) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(line) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("changeflow exited ({status}):\n{log}");
            }
            if Instant::now() > until {
                bail!("no `{line}` after 60 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Payments settled per second with `handlers` handlers instances beside one capture
/// instance (None: one instance running everything).
async fn measure(client: &Client, handlers: Option<usize>, payments: u64) -> anyhow::Result<f64> {
    let name = match handlers {
        None => "all".to_owned(),
        Some(k) => format!("split{k}"),
    };
    let db_name = format!("bench_roles_{}_{name}", std::process::id());
    let db = client.database(&db_name);
    db.drop().await?;
    let mut config = payments_config(&db_name, db_name.clone(), 0);
    config.provider.latency_ms = LATENCY_MS;
    config.provider.max_in_flight = MAX_IN_FLIGHT;
    config.kafka.partitions = 6;
    config.routes.retain(|t| t != "memory_stats");
    let mut instances = Vec::new();
    match handlers {
        None => {
            let mut all = Instance::spawn(&config, "all")?;
            all.wait_for("stream open").await?;
            instances.push(all);
        }
        Some(k) => {
            let mut capture = Instance::spawn(&config, "capture")?;
            capture.wait_for("stream open").await?;
            instances.push(capture);
            for _ in 0..k {
                let mut h = Instance::spawn(&config, "handlers")?;
                h.wait_for("partitions assigned").await?;
                instances.push(h);
            }
            // Let the group settle its last rebalance.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    let started = Instant::now();
    insert(&db, payments).await?;
    let until = started + Duration::from_secs(600);
    while counted(&db).await? < payments {
        if Instant::now() > until {
            bail!("{name}: not every payment counted after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    for instance in instances {
        instance.stop();
    }
    db.drop().await?;
    Ok(payments as f64 / seconds)
}

async fn insert(db: &Database, payments: u64) -> anyhow::Result<()> {
    let collection = db.collection::<Document>("payments");
    let all: Vec<Document> = (0..payments)
        .map(|i| pending_payment(format!("p-{i}"), i % 7))
        .collect();
    for chunk in all.chunks(1000) {
        collection.insert_many(chunk.to_vec()).await?;
    }
    Ok(())
}

async fn counted(db: &Database) -> anyhow::Result<u64> {
    let counters: Vec<Document> = db
        .collection::<Document>("payment_counters")
        .find(doc! {})
        .await?
        .try_collect()
        .await?;
    Ok(outcomes_counted(&counters).max(0) as u64)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let payments = env_number("BENCH_PAYMENTS", 3000)?;
        let client = mongo().await?;
        println!(
            "payments flow: {payments} payments, provider {LATENCY_MS} ms per call, at most \
             {MAX_IN_FLIGHT} calls at once per instance"
        );
        let single = measure(&client, None, payments).await?;
        println!("all (one process)        {single:>8.0} payments/s   1.00×");
        for k in 1..=3 {
            let rate = measure(&client, Some(k), payments).await?;
            println!(
                "capture + {k} handlers     {rate:>8.0} payments/s   {:.2}×",
                rate / single
            );
        }
        Ok(())
    })
}

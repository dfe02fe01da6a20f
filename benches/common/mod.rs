//! What the benchmark programs share: the servers under test and numeric settings from the
//! environment.
#![allow(dead_code)] // each bench uses a different part

use std::time::Duration;

use anyhow::Context;
use mongodb::Client;
use mongodb::bson::doc;

/// A whole-number setting from the environment variable `name`, or `default`.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}=`{v}` is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// Kafka bootstrap brokers: `KAFKA_BROKERS`, else the local broker of `cargo xtask up`.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A client of `MONGODB_URI` (else the local replica set), checked to answer.
pub async fn mongo() -> anyhow::Result<Client> {
    let uri = std::env::var("MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?replicaSet=rs0".to_owned());
    let client = Client::with_uri_str(&uri).await?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .with_context(|| format!("no MongoDB at {uri}; start it with `cargo xtask up`"))?;
    Ok(client)
}

/// CPU time (user + system) this process used so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) of every local `mongod`, when the server runs on this machine:
/// shows whether the server or the reader is the bottleneck.
pub fn server_cpu_time() -> Option<Duration> {
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    let mut ticks = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = entry.path();
        if std::fs::read_to_string(path.join("comm")).ok().as_deref() != Some("mongod\n") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the command name (which ends with ')'): utime and stime are 12th and 13th.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (field(11), field(12)) {
            ticks += user + system;
            found = true;
        }
    }
    found.then(|| Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64))
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A configuration watching `db`.payments, keeping checkpoints in `checkpoints` and
/// publishing to the local broker with topics prefixed `<db>_<round>.`.
pub fn payments_config(db: &str, checkpoints: String, round: u32) -> changeflow::config::Config {
    let mut config = changeflow::config::Config {
        watch: vec![changeflow::config::WatchedDatabase {
            database: db.to_owned(),
            collections: vec!["payments".to_owned()],
        }],
        ..changeflow::config::Config::default()
    };
    config.payments.database = db.to_owned();
    config.checkpoint.database = checkpoints;
    config.kafka.brokers = kafka_brokers();
    config.kafka.topic_prefix = format!("{db}_{round}.");
    config
}

/// A PENDING payment as the benches write it: `id`, 12.50, product `product-{product}`.
pub fn pending_payment(id: String, product: u64) -> mongodb::bson::Document {
    let amount: mongodb::bson::Decimal128 = "12.50"
        .parse()
        .unwrap_or_else(|e| unreachable!("a decimal literal: {e}"));
    doc! {
        "_id": id,
        "amount": amount,
        "status": "PENDING",
        "product": {"code": format!("product-{product}"), "name": "Bench product"},
    }
}

/// The outcomes the counters documents hold, over every product.
pub fn outcomes_counted(counters: &[mongodb::bson::Document]) -> i64 {
    counters
        .iter()
        .map(|c| {
            c.get_i64("successfulPayments").unwrap_or(0) + c.get_i64("failedPayments").unwrap_or(0)
        })
        .sum()
}

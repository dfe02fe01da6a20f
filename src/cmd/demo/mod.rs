//! `changeflow demo`: the pipeline under a small load, with progress and final counters:
//! payments through the HTTP API, then the agent-memory workload ([`memory`]).

pub mod memory;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use crate::cmd::run as service;
use crate::config::Config;
use crate::domain::money::Amount;
use crate::domain::payments::PaymentStatus;
use crate::http::counters::counter_value;
use crate::http::payments::NewPayment;
use crate::source::StartAt;

/// The demo's products: fixed codes, so repeated demos add to the same counters.
const PRODUCTS: [(&str, &str, &str); 3] = [
    (
        "5f1c5a4e-2b1d-4c1e-9a3f-0d7e6b1a2c01",
        "Fountain pen",
        "19.99",
    ),
    ("5f1c5a4e-2b1d-4c1e-9a3f-0d7e6b1a2c02", "Notebook", "4.50"),
    ("5f1c5a4e-2b1d-4c1e-9a3f-0d7e6b1a2c03", "Ink bottle", "7.25"),
];

/// Creates `count` payments, waits until each is settled and counted, prints the counters.
pub async fn run(
    config: Arc<Config>,
    count: u32,
    memory_users: u32,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = service::start(config.clone(), StartAt::Now).await?;
    running.ready(Duration::from_secs(30)).await?;
    println!(
        "changeflow is running; HTTP API on http://{} (try /payments, /payment-counters, /metrics)",
        running.http_address
    );
    let api = running.api.clone();
    let work = async {
        let before = counted(&api.counters).await?;
        let mut ids = Vec::with_capacity(count as usize);
        for i in 0..count {
            let (code, name, price) = PRODUCTS[i as usize % PRODUCTS.len()];
            let new = NewPayment {
                product_code: code.to_owned(),
                product_name: name.to_owned(),
                unit_price: price.parse::<Amount>().context("demo price")?,
                quantity: u64::from(i % 3 + 1),
            };
            let payment = api
                .payments
                .create(&new)
                .await
                .map_err(|e| anyhow::anyhow!("creating a payment: {e:?}"))?;
            ids.push(payment.id);
        }
        println!(
            "created {count} PENDING payments; the simulated provider answers after {} ms ({})",
            config.provider.latency_ms,
            String::from(config.provider.policy)
        );
        let payments = api.payments.collection();
        let started = Instant::now();
        let limit = Duration::from_millis(config.provider.latency_ms) * 2 + Duration::from_secs(60);
        loop {
            let pending = payments
                .count_documents(
                    doc! {"_id": {"$in": &ids}, "status": PaymentStatus::Pending.as_str()},
                )
                .await?;
            let now = counted(&api.counters).await?;
            let newly = now.saturating_sub(before);
            println!(
                "  {:>5.1}s  settled {:>6}/{count}  counted {:>6}/{count}",
                started.elapsed().as_secs_f64(),
                u64::from(count) - pending.min(u64::from(count)),
                newly
            );
            if pending == 0 && newly >= u64::from(count) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "the payments were not all settled and counted within {limit:?}; is changeflow \
                 the only writer of these counters? See the log above for errors"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        print_counters(&api.counters).await?;
        if memory_users > 0 {
            memory_phase(&running.client, &config, memory_users).await?;
        }
        Ok(())
    };
    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = work => r,
        _ = &mut shutdown => Ok(()),
    };
    running.until(async {}).await?;
    result
}

/// Sum of both counters over every product.
async fn counted(counters: &mongodb::Collection<Document>) -> anyhow::Result<u64> {
    let docs: Vec<Document> = counters.find(doc! {}).await?.try_collect().await?;
    Ok(docs
        .iter()
        .map(|d| count(d, "successfulPayments") + count(d, "failedPayments"))
        .sum())
}

fn count(doc: &Document, field: &str) -> u64 {
    u64::try_from(counter_value(doc, field)).unwrap_or(0)
}

async fn print_counters(counters: &mongodb::Collection<Document>) -> anyhow::Result<()> {
    let docs: Vec<Document> = counters
        .find(doc! {})
        .sort(doc! {"productName": 1})
        .await?
        .try_collect()
        .await?;
    println!("\npayment_counters (all time):");
    println!("  {:<20} {:>12} {:>8}", "product", "successful", "failed");
    for d in &docs {
        println!(
            "  {:<20} {:>12} {:>8}",
            d.get_str("productName").unwrap_or("?"),
            count(d, "successfulPayments"),
            count(d, "failedPayments")
        );
    }
    Ok(())
}

/// Runs the memory workload, waits until `memory_stats` counted all of it (threads expire
/// when the TTL monitor next runs: up to a minute on a default server), prints the stats.
async fn memory_phase(client: &mongodb::Client, config: &Config, users: u32) -> anyhow::Result<()> {
    // The workload needs the TTL index and pre-images: set them up (idempotent).
    crate::cmd::setup::run(client, config)
        .await
        .context("preparing the memory collections (changeflow setup)")?;
    let db = client.database(&config.memory.database);
    let run_id = format!("demo-{}", mongodb::bson::oid::ObjectId::new());
    let workload = memory::Workload {
        users,
        ..memory::Workload::default()
    };
    println!("\nagent memory: {users} users follow the thread → episode → memory lifecycle");
    let expected = memory::run(&db, &config.memory, workload, &run_id, |done| {
        println!("  users done {done:>5}/{users}");
    })
    .await
    .context("writing the memory workload")?;
    let stats = db.collection::<Document>(crate::targets::memory_stats::MEMORY_STATS);
    let ttl_every = ttl_monitor_seconds(client).await;
    let started = Instant::now();
    let limit = Duration::from_secs(150);
    let mut explained = false;
    loop {
        let docs: Vec<Document> = stats
            .find(doc! {"_id": {"$regex": format!("^{run_id}-")}})
            .await?
            .try_collect()
            .await?;
        let progress = Progress::of(&expected, &docs);
        println!(
            "  {:>5.1}s  users whose memory_stats match the workload {:>5}/{users}{}",
            started.elapsed().as_secs_f64(),
            progress.matched,
            if progress.only_ttl_left() {
                format!(
                    "  (waiting for {} expired thread(s) to be deleted by TTL)",
                    progress.expiries_left
                )
            } else {
                String::new()
            }
        );
        if progress.matched == expected.len() {
            print_memory_stats(&docs);
            return Ok(());
        }
        if progress.only_ttl_left() && !explained {
            explained = true;
            println!(
                "           expired threads go when the server's TTL monitor next runs: {}",
                match ttl_every {
                    Some(s) => format!("every {s} s on this server (ttlMonitorSleepSecs)"),
                    None => "every 60 s by default (ttlMonitorSleepSecs)".to_owned(),
                }
            );
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "memory_stats did not reach the workload's counts within {limit:?}; are the memory \
             collections watched, and is the TTL monitor running? See the log above for errors"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// How far `memory_stats` is from what the workload did.
struct Progress {
    /// Users whose counts are all as predicted.
    matched: usize,
    /// TTL deletions predicted and not yet counted.
    expiries_left: i64,
    /// Whether anything other than TTL deletions is still missing.
    other_left: bool,
}

impl Progress {
    fn of(expected: &memory::Expected, docs: &[Document]) -> Progress {
        let mut progress = Progress {
            matched: 0,
            expiries_left: 0,
            other_left: false,
        };
        let empty = BTreeMap::new();
        let actual: BTreeMap<&str, BTreeMap<String, i64>> = docs
            .iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?, memory::counts_of(d))))
            .collect();
        for (user, wanted) in expected {
            let have = actual.get(user.as_str()).unwrap_or(&empty);
            if have == wanted {
                progress.matched += 1;
                continue;
            }
            for (field, n) in wanted {
                let got = have.get(field).copied().unwrap_or(0);
                if field == memory::THREADS_EXPIRED {
                    progress.expiries_left += (n - got).max(0);
                } else if got != *n {
                    progress.other_left = true;
                }
            }
        }
        progress
    }

    /// Only the TTL monitor's deletions are missing.
    fn only_ttl_left(&self) -> bool {
        !self.other_left && self.expiries_left > 0
    }
}

/// The server's `ttlMonitorSleepSecs`, when it lets us read it.
async fn ttl_monitor_seconds(client: &mongodb::Client) -> Option<i64> {
    let reply = client
        .database("admin")
        .run_command(doc! {"getParameter": 1, "ttlMonitorSleepSecs": 1})
        .await
        .ok()?;
    match reply.get("ttlMonitorSleepSecs")? {
        mongodb::bson::Bson::Int32(n) => Some(i64::from(*n)),
        mongodb::bson::Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

fn print_memory_stats(docs: &[Document]) {
    println!("\nmemory_stats (this run):");
    for d in docs {
        let counts = memory::counts_of(d);
        let line: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  {}: {}", d.get_str("_id").unwrap_or("?"), line.join(" "));
    }
}

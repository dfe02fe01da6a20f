//! Snapshot throughput: N payments copied into Kafka by changeflow's snapshot (chunks read
//! at one cluster time, `payment_observed` events through the ordered Kafka path, progress
//! stored per chunk) next to a plain driver `find()` over the same collection, in the
//! same run. Prints documents/s, the ratio (target: ≥ 0.8), CPU per document and peak RSS.
//!
//! Needs the replica set and the broker (`cargo xtask up`, or MONGODB_URI / KAFKA_BROKERS).
//! `BENCH_N` sets N (default 200000), `BENCH_ROUNDS` the rounds (default 3); each round
//! runs both readers, in turns, and the figure is the median of the rounds' ratios.
//!
//!     cargo bench --bench snapshot

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use changeflow::config::SnapshotMode;
use changeflow::observe::health::Health;
use changeflow::observe::metrics::Metrics;
use changeflow::pipeline::Engine;
use changeflow::source::StartAt;
use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Decimal128, Document, RawDocumentBuf, doc};

mod common;

use common::{cpu_time, env_number, mongo, payments_config, peak_rss_mib};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn write_payments(client: &Client, db: &str, n: u64) -> anyhow::Result<()> {
    let payments = client.database(db).collection::<Document>("payments");
    let amount: Decimal128 = "49.80".parse().context("decimal")?;
    let mut i = 0u64;
    while i < n {
        let batch: Vec<Document> = (i..(i + 10_000).min(n))
            .map(|k| {
                let status = ["PENDING", "CONFIRMED", "FAILED"][(k % 3) as usize];
                doc! {"_id": format!("{k:08}-0000-4000-8000-000000000000"), "amount": amount,
                "status": status,
                "product": {"code": format!("product-{}", k % 50), "name": "Green tea"}}
            })
            .collect();
        i += batch.len() as u64;
        payments.insert_many(batch).await?;
    }
    Ok(())
}

/// A plain driver loop over the whole collection, raw documents.
async fn plain_find(client: &Client, db: &str, n: u64) -> anyhow::Result<()> {
    let mut cursor = client
        .database(db)
        .collection::<RawDocumentBuf>("payments")
        .find(doc! {})
        .await?;
    let mut seen = 0u64;
    while let Some(doc) = cursor.try_next().await? {
        seen += u64::from(!doc.as_bytes().is_empty());
    }
    if seen != n {
        bail!("find returned {seen} documents, expected {n}");
    }
    Ok(())
}

/// changeflow's initial snapshot of the payments into Kafka, until its progress says done
/// (every chunk delivered: the broker acknowledged every record).
async fn snapshot(client: &Client, db: &str, round: u32, n: u64) -> anyhow::Result<()> {
    let mut config = payments_config(db, format!("{db}_cp{round}"), round);
    config.snapshot.mode = SnapshotMode::Initial;
    if let Some(chunk) = std::env::var("BENCH_CHUNK")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        config.snapshot.chunk_size = chunk;
    }
    // Only Kafka: the figure is the copy, not the handlers.
    let kafka = vec!["kafka".to_owned()];
    for kind in changeflow::config::RoutesConfig::KINDS {
        config.routes.set_targets(kind, kafka.clone());
    }
    let config = Arc::new(config);
    let targets = changeflow::targets::build(client, &config)
        .await
        .with_context(|| {
            format!(
                "no Kafka broker at {}; start it with `cargo xtask up`",
                config.kafka.brokers
            )
        })?;
    let engine = Engine::new(
        client.clone(),
        config.clone(),
        &targets,
        Arc::new(Metrics::new()),
        Arc::new(Health::new([db])),
        StartAt::Now,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone().cancelled_owned()));
    let progress = client
        .database(&config.checkpoint.database)
        .collection::<Document>("changeflow_snapshots");
    loop {
        if let Some(p) = progress.find_one(doc! {"done": true}).await? {
            let documents = p.get_i64("documents").unwrap_or(0);
            if documents as u64 != n {
                bail!("the snapshot delivered {documents} documents, expected {n}");
            }
            break;
        }
        if run.is_finished() {
            bail!(
                "the engine stopped before the snapshot ended: {:?}",
                run.await
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    run.await.context("engine task")??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_number("BENCH_N", 200_000)?;
    let rounds = env_number("BENCH_ROUNDS", 3)?.max(1) as u32;
    let client = mongo().await?;
    let db = format!("bench_snapshot_{}", std::process::id());
    let began = Instant::now();
    write_payments(&client, &db, n).await?;
    println!(
        "wrote {n} payments in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut walls = [Duration::ZERO; 2];
        let mut cpus = [Duration::ZERO; 2];
        for i in 0..2 {
            let phase = (i + round as usize) % 2;
            let (cpu, wall) = (cpu_time(), Instant::now());
            match phase {
                0 => plain_find(&client, &db, n).await?,
                _ => snapshot(&client, &db, round, n).await?,
            }
            walls[phase] = wall.elapsed();
            cpus[phase] = cpu_time() - cpu;
        }
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let ratio = rate(walls[1]) / rate(walls[0]);
        ratios.push(ratio);
        println!(
            "round {}: find() {:.0} docs/s ({:.1} µs CPU/doc); snapshot to Kafka {:.0} docs/s ({:.1} µs CPU/doc); ratio {ratio:.2}",
            round + 1,
            rate(walls[0]),
            cpus[0].as_secs_f64() * 1e6 / n as f64,
            rate(walls[1]),
            cpus[1].as_secs_f64() * 1e6 / n as f64,
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "snapshot/find: median ratio {:.2} over {rounds} rounds (target ≥ 0.80); N = {n}; peak RSS {:.1} MiB",
        ratios[ratios.len() / 2],
        peak_rss_mib()
    );
    client.database(&db).drop().await?;
    for round in 0..rounds {
        client.database(&format!("{db}_cp{round}")).drop().await?;
    }
    Ok(())
}

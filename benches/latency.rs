//! Latency from insert to broker acknowledgement at a steady offered load: payments are
//! inserted at `LATENCY_RATE` per second (default 2000) for `LATENCY_SECONDS` (default 20)
//! while changeflow publishes them to Kafka (idempotent producer, acks=all). Each event's
//! latency is the time from the change's server wall time to the broker's acknowledgement.
//! Prints p50 / p90 / p99 / p99.9 / max.
//!
//! Needs the replica set and a broker (`cargo xtask up`, or MONGODB_URI / KAFKA_BROKERS).
//!
//!     cargo bench --bench latency

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use changeflow::config::{Config, WatchedDatabase};
use changeflow::domain::EventKind;
use changeflow::observe::health::Health;
use changeflow::observe::metrics::Metrics;
use changeflow::pipeline::Engine;
use changeflow::pipeline::target::{Input, Routed, Target, TargetError};
use changeflow::source::StartAt;
use changeflow::targets::kafka::KafkaSink;
use futures::FutureExt;
use futures::future::BoxFuture;
use mongodb::bson::Document;

mod common;

use common::{env_number, kafka_brokers, mongo, pending_payment};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Kafka sink, recording each event's insert-to-acknowledgement latency in ms.
struct Timed {
    sink: KafkaSink,
    latencies: Mutex<Vec<f64>>,
}

impl Target for Timed {
    fn name(&self) -> &'static str {
        self.sink.name()
    }
    fn wants(&self, input: Input) -> bool {
        matches!(input, Input::Typed(kind) if kind == EventKind::PaymentRequested)
    }
    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            let Routed::Typed(event) = event else {
                return Ok(());
            };
            self.sink.handle(Routed::Typed(event)).await?;
            let acked = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if let Some(wall) = event.meta().wall_time
                && let Ok(mut latencies) = self.latencies.lock()
            {
                latencies.push((acked - wall.timestamp_millis()) as f64);
            }
            Ok(())
        }
        .boxed()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate = env_number("LATENCY_RATE", 2000)?.max(1);
    let seconds = env_number("LATENCY_SECONDS", 20)?.max(1);
    let brokers = kafka_brokers();
    let client = mongo().await?;
    let db = format!("latency_{}", std::process::id());

    let mut config = Config {
        watch: vec![WatchedDatabase {
            database: db.clone(),
            collections: vec!["payments".to_owned()],
        }],
        ..Config::default()
    };
    config.payments.database = db.clone();
    config.checkpoint.database = db.clone();
    config.kafka.brokers = brokers.clone();
    config.kafka.topic_prefix = format!("{db}.");
    let sink = KafkaSink::start(&config.kafka)
        .await
        .with_context(|| format!("no Kafka broker at {brokers}; start it with `cargo xtask up`"))?;
    let timed = Arc::new(Timed {
        sink,
        latencies: Mutex::new(Vec::new()),
    });
    let health = Arc::new(Health::new([db.as_str()]));
    let engine = Engine::new(
        client.clone(),
        Arc::new(config),
        &[timed.clone() as Arc<dyn Target>],
        Arc::new(Metrics::new()),
        health.clone(),
        StartAt::Now,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone().cancelled_owned()));
    while !health.all_open() {
        if run.is_finished() {
            bail!("the engine stopped while opening its stream");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Offered load: a small batch every 10 ms, paced against the clock so slow inserts
    // do not lower the rate.
    let payments = client.database(&db).collection::<Document>("payments");
    let total = rate * seconds;
    let per_tick = (rate / 100).max(1);
    let began = Instant::now();
    let mut written = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while written < total {
        tick.tick().await;
        let due = ((began.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let mut batch = Vec::new();
        while written < due && batch.len() < (per_tick * 10) as usize {
            batch.push(pending_payment(format!("lat-{written:08}"), written % 16));
            written += 1;
        }
        if !batch.is_empty() {
            payments.insert_many(batch).await?;
        }
    }
    let offered = total as f64 / began.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = timed.latencies.lock().map(|l| l.len()).unwrap_or(0) as u64;
        if seen >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {seen} of {total} events acknowledged within 60 s of the last insert");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.await.context("engine task")??;

    let mut latencies = timed
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_by(f64::total_cmp);
    println!(
        "offered {offered:.0} inserts/s for {seconds} s ({total} events), insert -> broker ack latency (ms):"
    );
    println!(
        "p50 {:.0}   p90 {:.0}   p99 {:.0} (target ≤ 25)   p99.9 {:.0}   max {:.0}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    client.database(&db).drop().await?;
    Ok(())
}

//! End-to-end throughput: N payment changes read by changeflow's pipeline (decode, route,
//! ordered lanes, acker, checkpoints; handlers that do no I/O) next to a plain driver loop
//! reading the same changes, in the same run. Prints events/s, the ratio, and peak RSS.
//!
//! With Kafka (`BENCH_KAFKA=1`, the default) a third reader routes the same changes to a
//! topic (idempotent producer, acks=all) and counts them once the broker acknowledged them.
//!
//! Needs the replica set and the broker (`cargo xtask up`, or MONGODB_URI / KAFKA_BROKERS).
//! `BENCH_N` sets N (default 200000), `BENCH_ROUNDS` the rounds (default 9). Each round runs
//! every reader, starting one later than the round before; the figures are the medians of
//! the rounds' ratios to the plain loop, which a noisy neighbour slowing one phase moves
//! least.
//!
//!     cargo bench --bench pipeline

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use changeflow::config::{Config, WatchedDatabase};
use changeflow::domain::EventKind;
use changeflow::observe::health::Health;
use changeflow::observe::metrics::Metrics;
use changeflow::pipeline::Engine;
use changeflow::pipeline::target::{self, Input, Routed, TargetError};
use changeflow::source::{self, StartAt};
use changeflow::targets::kafka::KafkaSink;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use mongodb::Client;
use mongodb::bson::{Document, RawDocumentBuf, Timestamp, doc};
use mongodb::options::FullDocumentType;
use tokio::sync::Notify;

// The same allocator as the changeflow binary; both readers share it.
mod common;

use common::{
    cpu_time, env_number, mongo, payments_config, peak_rss_mib, pending_payment, server_cpu_time,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts requested payments (after publishing them, when it has a Kafka sink); wakes the
/// bench when all N are done.
struct Counting {
    sink: Option<KafkaSink>,
    seen: AtomicU64,
    target: u64,
    done: Notify,
}

impl target::Target for Counting {
    fn name(&self) -> &'static str {
        match &self.sink {
            Some(sink) => sink.name(),
            None => "bench_counter",
        }
    }
    fn wants(&self, input: Input) -> bool {
        matches!(input, Input::Typed(kind) if kind == EventKind::PaymentRequested)
    }
    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            let Routed::Typed(event) = event else {
                return Ok(());
            };
            if let Some(sink) = &self.sink {
                sink.handle(Routed::Typed(event)).await?;
            }
            if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
                self.done.notify_one();
            }
            Ok(())
        }
        .boxed()
    }
}

/// How long one reader took, and (for the pipeline) what it waited for.
struct Run {
    wall: Duration,
    waits: Option<Waits>,
}

/// The pipeline's waits: its reader for the server's batches, its dispatcher for
/// checkpoint writes (reading held back at the read-ahead bound).
#[derive(Clone, Copy)]
struct Waits {
    server: Duration,
    checkpoint: Duration,
}

/// What one phase cost.
struct Cost {
    wall: Duration,
    waits: Option<Waits>,
    cpu: Duration,
    server_cpu: Option<Duration>,
}

/// Runs `phase`, returning its wall time and the CPU time this process (and a local server)
/// spent on it.
async fn measured<F: Future<Output = anyhow::Result<Run>>>(phase: F) -> anyhow::Result<Cost> {
    let cpu = cpu_time();
    let server_cpu = server_cpu_time();
    let Run { wall, waits } = phase.await?;
    Ok(Cost {
        wall,
        waits,
        cpu: cpu_time().saturating_sub(cpu),
        server_cpu: server_cpu
            .zip(server_cpu_time())
            .map(|(before, after)| after.saturating_sub(before)),
    })
}

async fn write_payments(client: &Client, db: &str, n: u64) -> anyhow::Result<Timestamp> {
    let database = client.database(db);
    // The cluster time just before the first payment: both readers start there.
    let mut session = client.start_session().await?;
    database
        .collection::<Document>("bench_marker")
        .insert_one(doc! {"at": "start"})
        .session(&mut session)
        .await?;
    let start = session
        .operation_time()
        .context("the server reported no operation time")?;
    let payments = database.collection::<Document>("payments");
    let mut written = 0;
    while written < n {
        let batch: Vec<Document> = (written..(written + 1000).min(n))
            .map(|i| pending_payment(format!("bench-{i:08}"), i % 16))
            .collect();
        written += batch.len() as u64;
        payments.insert_many(batch).ordered(false).await?;
    }
    Ok(start)
}

/// The plain loop: one change stream, same filter and options, count N raw events.
async fn plain_driver(
    client: &Client,
    target: &WatchedDatabase,
    start: Timestamp,
    n: u64,
) -> anyhow::Result<Run> {
    let options = Config::default().engine;
    let began = Instant::now();
    let mut stream = client
        .database(&target.database)
        .watch()
        .pipeline(source::pipeline(
            &target.collections,
            &options.operation_types,
            Some(source::large::split_stage()),
        ))
        .batch_size(options.batch_size)
        .full_document(FullDocumentType::UpdateLookup)
        .start_at_operation_time(start)
        .await?
        .with_type::<RawDocumentBuf>();
    let mut seen = 0;
    while seen < n {
        match stream.next().await {
            Some(Ok(_)) => seen += 1,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("stream ended after {seen} events"),
        }
    }
    Ok(Run {
        wall: began.elapsed(),
        waits: None,
    })
}

/// One reader of the N changes.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// The plain driver loop.
    Plain,
    /// changeflow's pipeline, to the target.
    Pipeline(Target),
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Plain => "plain driver loop",
            Phase::Pipeline(Target::Nothing) => "changeflow pipeline",
            Phase::Pipeline(Target::Kafka) => "changeflow pipeline to Kafka",
        }
    }
}

/// Where the pipeline sends the events.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// A handler that does no I/O.
    Nothing,
    /// Kafka (idempotent producer, acks=all), then the same handler.
    Kafka,
}

/// changeflow's pipeline over the same changes, until the handler saw N (and, with Kafka,
/// the broker acknowledged them), including the final checkpoint write.
async fn pipeline(
    client: &Client,
    db: &str,
    round: u32,
    start: Timestamp,
    n: u64,
    target: Target,
) -> anyhow::Result<Run> {
    // A fresh checkpoint database per phase, so each starts at `start`.
    let checkpoints = match target {
        Target::Nothing => format!("{db}_cp{round}"),
        Target::Kafka => format!("{db}_kcp{round}"),
    };
    let config = payments_config(db, checkpoints, round);
    let sink = match target {
        Target::Nothing => None,
        Target::Kafka => Some(KafkaSink::start(&config.kafka).await.with_context(|| {
            format!(
                "no Kafka broker at {}; start it with `cargo xtask up` or set BENCH_KAFKA=0",
                config.kafka.brokers
            )
        })?),
    };
    let counting = Arc::new(Counting {
        sink,
        seen: AtomicU64::new(0),
        target: n,
        done: Notify::new(),
    });
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::new(
        client.clone(),
        Arc::new(config),
        &[counting.clone() as Arc<dyn target::Target>],
        metrics.clone(),
        Arc::new(Health::new([db])),
        StartAt::OperationTime(start),
    );
    let began = Instant::now();
    let done = counting.clone();
    let run = tokio::spawn(engine.run(async move { done.done.notified().await }));
    run.await.context("engine task")??;
    let elapsed = began.elapsed();
    let seen = counting.seen.load(Ordering::Relaxed);
    if seen != n {
        bail!("pipeline handled {seen} events, expected {n}");
    }
    let seconds = Duration::from_secs_f64;
    Ok(Run {
        wall: elapsed,
        waits: Some(Waits {
            server: seconds(metrics.reader_metrics(db).server.get()),
            checkpoint: seconds(metrics.dispatch_pauses(db).checkpoint.get()),
        }),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_number("BENCH_N", 200_000)?;
    let rounds = env_number("BENCH_ROUNDS", 9)?.max(1) as u32;
    let client = mongo().await?;
    let db = format!("bench_{}", std::process::id());
    let target = WatchedDatabase {
        database: db.clone(),
        collections: vec!["payments".to_owned()],
    };

    let began = Instant::now();
    let start = write_payments(&client, &db, n).await?;
    println!(
        "wrote {n} payments in {:.1} s; peak RSS so far {:.1} MiB",
        began.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    let with_kafka = env_number("BENCH_KAFKA", 1)? != 0;
    let mut phases = vec![Phase::Plain, Phase::Pipeline(Target::Nothing)];
    if with_kafka {
        phases.push(Phase::Pipeline(Target::Kafka));
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let micros = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); phases.len()];
    let mut kafka_rates = Vec::new();
    for round in 0..rounds {
        // Each round runs every phase, starting one later than the round before.
        let mut costs: Vec<Option<Cost>> = phases.iter().map(|_| None).collect();
        for i in 0..phases.len() {
            let index = (i + round as usize) % phases.len();
            let cost = match phases[index] {
                Phase::Plain => measured(plain_driver(&client, &target, start, n)).await?,
                Phase::Pipeline(to) => {
                    measured(pipeline(&client, &db, round, start, n, to)).await?
                }
            };
            costs[index] = Some(cost);
        }
        let costs: Vec<Cost> = costs.into_iter().flatten().collect();
        let plain = rate(costs[0].wall);
        let mut line = format!("round {}:", round + 1);
        for (index, (phase, cost)) in phases.iter().zip(&costs).enumerate() {
            let events = rate(cost.wall);
            let mut text = format!("{:.1} µs CPU/event", micros(cost.cpu));
            if let Some(server) = cost.server_cpu {
                text += &format!(", mongod {:.1}", micros(server));
            }
            if let Some(waits) = cost.waits {
                let share = |d: Duration| d.as_secs_f64() / cost.wall.as_secs_f64() * 100.0;
                text += &format!(
                    ", waited for the server {:.0}%, held back for checkpoints {:.0}%",
                    share(waits.server),
                    share(waits.checkpoint)
                );
            }
            line += &format!("\n  {:<28} {events:>7.0} events/s ({text})", phase.label());
            if index > 0 {
                line += &format!("   ratio {:.3}", events / plain);
                ratios[index].push(events / plain);
            }
            if *phase == Phase::Pipeline(Target::Kafka) {
                kafka_rates.push(events);
            }
        }
        println!("{line}");
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        (
            values[values.len() / 2],
            values[0],
            values[values.len() - 1],
        )
    };
    let (m, lo, hi) = median(&mut ratios[1]);
    println!(
        "pipeline / plain: median of {rounds} rounds {m:.3} (target ≥ 0.9); lowest {lo:.3}, highest {hi:.3}"
    );
    if with_kafka {
        let (m, lo, hi) = median(&mut ratios[2]);
        let (rm, rlo, rhi) = median(&mut kafka_rates);
        println!(
            "to Kafka (acknowledged, checkpoint written): median {rm:.0} events/s (target ≥ 60000; \
             rounds {rlo:.0}–{rhi:.0}); / plain: median {m:.3}, lowest {lo:.3}, highest {hi:.3}"
        );
    }
    println!(
        "peak RSS of the whole run: {:.1} MiB (target ≤ 100)",
        peak_rss_mib()
    );
    let checkpoints = (0..rounds).flat_map(|r| [format!("{db}_cp{r}"), format!("{db}_kcp{r}")]);
    for name in std::iter::once(db.clone()).chain(checkpoints) {
        client.database(&name).drop().await?;
    }
    // Ends the driver's sessions while the runtime still runs, not from a task spawned
    // while it shuts down.
    client.shutdown().await;
    Ok(())
}

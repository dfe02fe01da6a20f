//! Handlers with real I/O: backlogs drained by the real handlers, next to the same pipeline
//! with handlers that do no I/O, in the same run.
//!
//! - Payments: `BENCH_PAYMENTS` (default 100000) PENDING payments over 7 products, written
//!   before the engine starts. Handlers on: the provider simulator (latency 0) settles each
//!   through the status updater, the counters count every outcome; done when the counters
//!   hold every payment. Events: the requests and the outcomes. No-I/O: the same changes
//!   again (requests and outcomes) through the pipeline with a handler that does no I/O.
//! - Memory: the agent-memory workload over 10 users, sized to about `BENCH_MEMORY`
//!   (default 50000) events. No-I/O: the pipeline reads them. Handlers on: `memory_stats`;
//!   done when every user's statistics equal the workload's.
//!
//! Prints events/s and CPU per event (this process, and a local mongod) for each phase,
//! the ratio handlers-on / no-I/O (target ≥ 0.5), and the peak RSS (target ≤ 100 MiB).
//! Needs the replica set (`cargo xtask up`, or MONGODB_URI); Kafka is not used.
//!
//!     cargo bench --bench handlers

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use changeflow::cmd::demo::memory;
use changeflow::config::{Config, RoutesConfig, WatchedDatabase};
use changeflow::domain::{DomainEvent, EventKind};
use changeflow::observe::health::Health;
use changeflow::observe::metrics::Metrics;
use changeflow::pipeline::Engine;
use changeflow::pipeline::target::{Input, Routed, Target, TargetError};
use changeflow::source::StartAt;
use changeflow::targets::counters::COUNTERS;
use changeflow::targets::memory_stats::MEMORY_STATS;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{Document, Timestamp, doc};
use mongodb::{Client, Database};
use tokio::sync::Notify;

mod common;

use common::{
    cpu_time, env_number, mongo, outcomes_counted, peak_rss_mib, pending_payment, server_cpu_time,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PRODUCTS: u64 = 7;
const USERS: u32 = 10;
/// The user of the memory workload's last change: the no-I/O phase stops at it.
const END_USER: &str = "bench-end";

/// Counts the events of a kind set, doing no I/O; wakes the bench at `target` events, or at
/// the memory end marker.
struct Counting {
    kinds: &'static [EventKind],
    seen: AtomicU64,
    target: u64,
    ended: AtomicBool,
    done: Notify,
}

impl Target for Counting {
    fn name(&self) -> &'static str {
        "bench_counter"
    }
    fn wants(&self, input: Input) -> bool {
        matches!(input, Input::Typed(kind) if self.kinds.contains(&kind))
    }
    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            let Routed::Typed(event) = event else {
                return Ok(());
            };
            let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
            let end = matches!(event, DomainEvent::Memory(m) if m.user_id == END_USER);
            if (seen == self.target || end) && !self.ended.swap(true, Ordering::Relaxed) {
                self.done.notify_one();
            }
            Ok(())
        }
        .boxed()
    }
}

/// What one phase cost.
struct Cost {
    events: u64,
    wall: Duration,
    cpu: Duration,
    server_cpu: Option<Duration>,
}

impl Cost {
    fn rate(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }

    fn line(&self, label: &str) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.events as f64;
        let mut line = format!(
            "  {label:<34} {:>8.0} events/s ({} events in {:.1} s; {:.1} µs CPU/event",
            self.rate(),
            self.events,
            self.wall.as_secs_f64(),
            per(self.cpu)
        );
        if let Some(server) = self.server_cpu {
            line += &format!(", mongod {:.1}", per(server));
        }
        line + ")"
    }
}

/// Runs the engine over `db` from `start` with `handlers` until `done` completes; returns
/// what it cost, with `events` counted by `events()` at the end.
async fn drain(
    client: &Client,
    config: Config,
    handlers: &[Arc<dyn Target>],
    start: Timestamp,
    done: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Duration, Duration, Option<Duration>, Arc<Metrics>)> {
    let metrics = Arc::new(Metrics::new());
    let db = config.watch[0].database.clone();
    let engine = Engine::new(
        client.clone(),
        Arc::new(config),
        handlers,
        metrics.clone(),
        Arc::new(Health::new([db.as_str()])),
        StartAt::OperationTime(start),
    );
    let (cpu, server_cpu) = (cpu_time(), server_cpu_time());
    let began = Instant::now();
    tokio::spawn(engine.run(done))
        .await
        .context("engine task")??;
    let wall = began.elapsed();
    let server = server_cpu
        .zip(server_cpu_time())
        .map(|(before, after)| after.saturating_sub(before));
    Ok((wall, cpu_time().saturating_sub(cpu), server, metrics))
}

/// Drains the changes from `start` with a handler of `kinds` that does no I/O, until it saw
/// `target` events (or the memory end marker).
async fn no_io_drain(
    client: &Client,
    config: Config,
    kinds: &'static [EventKind],
    target: u64,
    start: Timestamp,
) -> anyhow::Result<Cost> {
    let counting = Arc::new(Counting {
        kinds,
        seen: AtomicU64::new(0),
        target,
        ended: AtomicBool::new(false),
        done: Notify::new(),
    });
    let done = counting.clone();
    let (wall, cpu, server_cpu, _) = drain(
        client,
        config,
        &[counting.clone() as Arc<dyn Target>],
        start,
        async move { done.done.notified().await },
    )
    .await?;
    Ok(Cost {
        events: counting.seen.load(Ordering::Relaxed),
        wall,
        cpu,
        server_cpu,
    })
}

/// A configuration over `db` (state in `<db>_cp<phase>`), with routes to `routes`' handlers
/// only (no Kafka).
fn config(db: &str, collections: &[&str], phase: &str, routes: RoutesConfig) -> Config {
    let mut config = Config {
        watch: vec![WatchedDatabase {
            database: db.to_owned(),
            collections: collections.iter().map(|c| (*c).to_owned()).collect(),
        }],
        routes,
        ..Config::default()
    };
    config.payments.database = db.to_owned();
    config.memory.database = db.to_owned();
    config.checkpoint.database = format!("{db}_cp{phase}");
    config.provider.latency_ms = 0;
    if let Ok(Some(size)) = std::env::var("BENCH_BATCH_SIZE").map(|v| v.parse().ok()) {
        config.engine.batch_size = size;
    }
    config
}

/// Routes without Kafka: every target but `kafka` kept.
fn without_kafka() -> anyhow::Result<RoutesConfig> {
    let mut table = toml::Value::try_from(RoutesConfig::default())?;
    if let Some(routes) = table.as_table_mut() {
        for (_, targets) in routes.iter_mut() {
            if let Some(list) = targets.as_array_mut() {
                list.retain(|t| t.as_str() != Some("kafka"));
            }
        }
    }
    Ok(table.try_into()?)
}

/// Every document of `collection` (none when it cannot be read).
async fn documents(collection: &mongodb::Collection<Document>) -> Vec<Document> {
    match collection.find(doc! {}).await {
        Ok(cursor) => cursor.try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Waits, polling every 100 ms, until `measure` of `collection`'s documents reaches `want`.
async fn until_reaches(
    collection: mongodb::Collection<Document>,
    want: i64,
    measure: fn(&[Document]) -> i64,
) {
    while measure(&documents(&collection).await) < want {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Statistics counted over every user, TTL expiries aside.
fn stats_total(docs: &[Document]) -> i64 {
    let now: memory::Expected = docs
        .iter()
        .map(|d| {
            (
                d.get_str("_id").unwrap_or("?").to_owned(),
                memory::counts_of(d),
            )
        })
        .collect();
    total(&now)
}

/// The cluster time just before the next write.
async fn now(client: &Client, db: &Database) -> anyhow::Result<Timestamp> {
    let mut session = client.start_session().await?;
    db.collection::<Document>("bench_marker")
        .insert_one(doc! {"at": "start"})
        .session(&mut session)
        .await?;
    session
        .operation_time()
        .context("the server reported no operation time")
}

async fn payments_phase(client: &Client, db_name: &str, n: u64) -> anyhow::Result<(Cost, Cost)> {
    let db = client.database(db_name);
    let start = now(client, &db).await?;
    let began = Instant::now();
    for first in (0..n).step_by(1000) {
        let batch: Vec<Document> = (first..(first + 1000).min(n))
            .map(|i| pending_payment(format!("bench-{i:08}"), i % PRODUCTS))
            .collect();
        db.collection::<Document>("payments")
            .insert_many(batch)
            .await?;
    }
    println!(
        "wrote {n} PENDING payments in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let real_config = config(db_name, &["payments"], "real", without_kafka()?);
    let targets = changeflow::targets::build(client, &real_config).await?;
    let counters = db.collection::<Document>(COUNTERS);
    let (wall, cpu, server_cpu, metrics) = drain(
        client,
        real_config,
        &targets,
        start,
        until_reaches(counters, n as i64, outcomes_counted),
    )
    .await?;
    let handled: u64 = metrics.received_by_kind().values().sum();
    let real = Cost {
        events: handled,
        wall,
        cpu,
        server_cpu,
    };
    println!(
        "  (peak RSS after the handlers-on drain: {:.1} MiB)",
        peak_rss_mib()
    );

    // The same changes (requests and outcomes, with the lookups of the updates) through
    // the same pipeline with a handler that does no I/O.
    const KINDS: &[EventKind] = &[
        EventKind::PaymentRequested,
        EventKind::PaymentConfirmed,
        EventKind::PaymentFailed,
    ];
    let no_io_config = config(db_name, &["payments"], "noio", RoutesConfig::default());
    let no_io = no_io_drain(client, no_io_config, KINDS, handled, start).await?;
    Ok((no_io, real))
}

/// Sum of every statistic but TTL expiries (those follow the server's TTL monitor, not us).
fn total(stats: &memory::Expected) -> i64 {
    stats
        .values()
        .flat_map(|fields| fields.iter())
        .filter(|(field, _)| field.as_str() != "threads_expired")
        .map(|(_, n)| n)
        .sum()
}

async fn memory_phase(client: &Client, db_name: &str, events: u64) -> anyhow::Result<(Cost, Cost)> {
    let db = client.database(db_name);
    let base = config(db_name, &[], "", RoutesConfig::default());
    changeflow::cmd::setup::run(client, &base).await?;
    let start = now(client, &db).await?;
    // About 25 events per thread of 20 turns.
    let threads = (events / 25 / u64::from(USERS)).max(1) as u32;
    let workload = memory::Workload {
        users: USERS,
        threads_per_user: threads,
        turns_per_thread: 20,
        ..memory::Workload::default()
    };
    let began = Instant::now();
    let expected = memory::run(&db, &base.memory, workload, "b", |_| {}).await?;
    db.collection::<Document>(&base.memory.short_term)
        .insert_one(doc! {
            "thread_id": END_USER, "user_id": END_USER, "messages": [], "summary": null,
            "summary_updated_at": null, "created_at": mongodb::bson::DateTime::now(),
            "expires_at": mongodb::bson::DateTime::now(),
        })
        .await?;
    println!(
        "wrote the memory workload ({USERS} users × {threads} threads × 20 turns) in {:.1} s \
         (peak RSS so far {:.1} MiB)",
        began.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    let collections = [
        base.memory.short_term.as_str(),
        base.memory.episodic.as_str(),
        base.memory.semantic.as_str(),
    ];
    let no_io_config = config(db_name, &collections, "mnoio", RoutesConfig::default());
    let no_io = no_io_drain(client, no_io_config, &EventKind::ALL, u64::MAX, start).await?;
    println!(
        "  (peak RSS after the memory no-I/O drain: {:.1} MiB)",
        peak_rss_mib()
    );

    let config = config(db_name, &collections, "mreal", without_kafka()?);
    let targets = changeflow::targets::build(client, &config).await?;
    let stats = db.collection::<Document>(MEMORY_STATS);
    let want = total(&expected) + 1;
    let (wall, cpu, server_cpu, _) = drain(
        client,
        config,
        &targets,
        start,
        until_reaches(stats, want, stats_total),
    )
    .await?;
    // The same changes as the no-I/O phase read, to the end marker.
    let events = no_io.events;
    Ok((
        no_io,
        Cost {
            events,
            wall,
            cpu,
            server_cpu,
        },
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let payments = env_number("BENCH_PAYMENTS", 100_000)?;
    let memory_events = env_number("BENCH_MEMORY", 50_000)?;
    let client = mongo().await?;
    let db = format!("benchh_{}", std::process::id());
    let memory_db = format!("benchm_{}", std::process::id());

    let (no_io, real) = payments_phase(&client, &db, payments).await?;
    println!("payments ({payments} over {PRODUCTS} products, provider latency 0):");
    println!("{}", no_io.line("pipeline, no-I/O handler"));
    println!("{}", real.line("provider + status updater + counters"));
    println!(
        "  handlers on / no-I/O: {:.2} (target ≥ 0.5)",
        real.rate() / no_io.rate()
    );

    let (no_io, real) = memory_phase(&client, &memory_db, memory_events).await?;
    println!("memory ({USERS} users):");
    println!("{}", no_io.line("pipeline, no-I/O handler"));
    println!("{}", real.line("memory_stats"));
    println!(
        "  handlers on / no-I/O: {:.2} (target ≥ 0.5)",
        real.rate() / no_io.rate()
    );
    println!(
        "peak RSS of the whole run: {:.1} MiB (target ≤ 100)",
        peak_rss_mib()
    );
    for name in [&db, &memory_db] {
        for suffix in ["", "_cpnoio", "_cpreal", "_cpmnoio", "_cpmreal"] {
            client.database(&format!("{name}{suffix}")).drop().await?;
        }
    }
    client.shutdown().await;
    Ok(())
}

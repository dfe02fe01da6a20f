//! Stalls and cut connections between changeflow and MongoDB, through a proxy the test
//! owns: a blackhole (nothing forwarded, nothing closed: the OS alone would wait minutes),
//! every connection reset, and added latency. During each the payments keep being written
//! straight to the server; changeflow must notice a stall, say so on `/healthz`, keep its
//! memory bounded and resume by itself, losing nothing.

use std::time::{Duration, Instant};

use std::collections::HashSet;

use crate::common::app::{
    Process, config, insert_pending, kafka_only_config, outcomes_and_counters, wait_all_settled,
    wait_settled_and_counted,
};
use crate::common::broker::OwnBroker;
use crate::common::proxy::{Mode, Proxy, shared_primary, through};
use crate::common::records::{consume_until, required};
use crate::common::{DEADLINE, mongo, mongodb_uri, unique_name, wait_until};
use mongodb::Collection;
use mongodb::bson::Document;

/// `/healthz`'s status code, or 0 when it does not answer.
async fn health_code(run: &Process) -> u16 {
    run.healthz().await.map_or(0, |(code, _)| code)
}

#[tokio::test]
async fn a_stalled_or_cut_connection_is_noticed_reported_and_recovered_from() {
    let _faults = crate::common::exclusive().await;
    let client = mongo().await;
    let proxy = Proxy::start(shared_primary().await).await;
    let name = unique_name("stall");
    let db = client.database(&name);
    let payments = db.collection::<Document>("payments");
    let mut config = config(&name);
    config.mongodb.uri = through(&mongodb_uri(), proxy.port());
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    insert_pending(&payments, "before", 20, 0).await;
    wait_all_settled(&db, DEADLINE).await;

    // 1. Blackhole: the connections stay open and nothing comes back.
    proxy.set(Mode::Blackhole);
    let stalled = Instant::now();
    insert_pending(&payments, "blackhole", 50, 1).await;
    wait_until(
        Duration::from_secs(120),
        "/healthz to report the stall",
        || async { (health_code(&run).await == 503).then_some(()) },
    )
    .await;
    let detected = stalled.elapsed();
    let rss = run.rss_mib();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set(Mode::Pass);
    let released = Instant::now();
    wait_all_settled(&db, Duration::from_secs(120)).await;
    let recovered = released.elapsed();
    wait_until(DEADLINE, "/healthz 200 again", || async {
        (health_code(&run).await == 200).then_some(())
    })
    .await;
    eprintln!(
        "blackhole: /healthz 503 after {detected:?}, RSS {rss:.1} MiB during it; all settled \
         {recovered:?} after traffic flowed again"
    );

    // 2. Every connection reset, new ones refused, for 5 s.
    proxy.set(Mode::Reset);
    let cut = Instant::now();
    insert_pending(&payments, "reset", 50, 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.set(Mode::Pass);
    wait_all_settled(&db, Duration::from_secs(120)).await;
    eprintln!(
        "reset: all settled {:?} after the cut ({:?} after it ended)",
        cut.elapsed(),
        cut.elapsed().saturating_sub(Duration::from_secs(5))
    );

    // 3. 150 ms each way on every chunk.
    proxy.set_latency(Duration::from_millis(150));
    let slow = Instant::now();
    insert_pending(&payments, "latency", 30, 3).await;
    wait_all_settled(&db, Duration::from_secs(120)).await;
    eprintln!(
        "latency 150 ms: 30 payments settled in {:?}",
        slow.elapsed()
    );
    proxy.set_latency(Duration::ZERO);

    wait_settled_and_counted(&db, DEADLINE, "after the stalls").await;
    let (outcomes, _) = outcomes_and_counters(&db).await;
    let total: i64 = outcomes.values().map(|(c, f)| c + f).sum();
    assert_eq!(total, 150, "{outcomes:?}");
    assert!(
        run.is_running(),
        "changeflow exited during the stalls:\n{}",
        run.log()
    );
}

#[tokio::test]
async fn a_frozen_broker_is_reported_stuck_and_nothing_is_lost() {
    let _faults = crate::common::exclusive().await;
    let broker = OwnBroker::start().await;
    let (payments, topic, mut run) = broker_run("frozen_broker", &broker.address()).await;
    insert_pending(&payments, "before", 20, 0).await;

    broker.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    insert_pending(&payments, "frozen", 100, 1).await;
    let body = wait_until(
        Duration::from_secs(60),
        "/healthz to report the freeze",
        || async {
            let (code, body) = run.healthz().await?;
            (code == 503).then_some(body)
        },
    )
    .await;
    let detected = frozen.elapsed();
    assert_eq!(body["status"], "stuck", "{body}");
    let rss = run.rss_mib();
    broker.signal(libc::SIGCONT);
    let thawed = Instant::now();
    let records = delivered(&broker.address(), &topic, 120).await;
    let delivered = thawed.elapsed();
    wait_until(DEADLINE, "/healthz 200 again", || async {
        (health_code(&run).await == 200).then_some(())
    })
    .await;
    eprintln!(
        "frozen broker: /healthz stuck after {detected:?} (stuck_after_ms 5000), RSS {rss:.1} \
         MiB; all 120 payments on Kafka {delivered:?} after it went on ({} records)",
        records
    );
    assert!(run.is_running(), "{}", run.log());
}

#[tokio::test]
async fn a_stalled_or_cut_broker_connection_is_reported_and_nothing_is_lost() {
    let _faults = crate::common::exclusive().await;
    let broker = OwnBroker::start().await;
    let proxy = broker.proxy();
    let through_proxy = broker.address();
    let (payments, topic, mut run) = broker_run("broker_stall", &through_proxy).await;
    insert_pending(&payments, "before", 20, 0).await;
    delivered(&through_proxy, &topic, 20).await;

    proxy.set(Mode::Blackhole);
    let stalled = Instant::now();
    insert_pending(&payments, "blackhole", 50, 1).await;
    wait_until(
        Duration::from_secs(60),
        "/healthz to report the stall",
        || async { (health_code(&run).await == 503).then_some(()) },
    )
    .await;
    let detected = stalled.elapsed();
    let rss = run.rss_mib();
    proxy.set(Mode::Pass);
    let released = Instant::now();
    delivered(&through_proxy, &topic, 70).await;
    eprintln!(
        "broker blackhole: /healthz 503 after {detected:?} (stuck_after_ms 5000), RSS \
         {rss:.1} MiB; all 70 on Kafka {:?} after traffic flowed again",
        released.elapsed()
    );

    proxy.set(Mode::Reset);
    let cut = Instant::now();
    insert_pending(&payments, "reset", 50, 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.set(Mode::Pass);
    delivered(&through_proxy, &topic, 120).await;
    eprintln!(
        "broker reset for 5 s: all 120 on Kafka {:?} after it ended",
        cut.elapsed().saturating_sub(Duration::from_secs(5))
    );

    proxy.set_latency(Duration::from_millis(150));
    let slow = Instant::now();
    insert_pending(&payments, "latency", 30, 3).await;
    let handled = "changeflow_events_handled_total{kind=\"payment_requested\"}";
    wait_until(
        Duration::from_secs(60),
        "150 payments acknowledged",
        || async { (run.metric(handled).await >= 150.0).then_some(()) },
    )
    .await;
    eprintln!(
        "broker latency 150 ms: 30 more acknowledged by the broker in {:?}",
        slow.elapsed()
    );
    proxy.set_latency(Duration::ZERO);
    delivered(&through_proxy, &topic, 150).await;
    wait_until(DEADLINE, "/healthz 200 again", || async {
        (health_code(&run).await == 200).then_some(())
    })
    .await;
    assert!(run.is_running(), "{}", run.log());
}

/// A Kafka-only changeflow publishing to `brokers`, called stuck after 5 s, with
/// records kept longer than any stall (librdkafka retries them itself); its payments
/// collection, payments topic and process.
async fn broker_run(prefix: &str, brokers: &str) -> (Collection<Document>, String, Process) {
    let name = unique_name(prefix);
    let mut config = kafka_only_config(&name);
    config.kafka.brokers = brokers.to_owned();
    config.kafka.delivery_timeout_ms = 60_000;
    config.health.stuck_after_ms = 5_000;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    let payments = mongo().await.database(&name).collection("payments");
    (payments, topic, run)
}

/// Reads `topic` until `count` distinct payments are on it; returns the records read.
async fn delivered(brokers: &str, topic: &str, count: usize) -> usize {
    let mut seen = HashSet::new();
    consume_until(
        brokers,
        topic,
        Duration::from_secs(120),
        Duration::from_millis(500),
        move |record| {
            seen.insert(required(record, "ce_subject").to_owned());
            seen.len() == count
        },
    )
    .await
    .len()
}

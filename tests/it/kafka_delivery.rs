//! Delivery guarantees against real brokers: a broker outage loses nothing and never lets
//! the checkpoint pass an undelivered event; a crash of changeflow repeats only a bounded
//! window of events, with their original ids, even while checkpoint writes are slow.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::app::{Process, kafka_only_config, payment};
use crate::common::broker::OwnBroker;
use crate::common::own_mongod::{Options, OwnMongod, PASSWORD_IN_URI};
use crate::common::records::{consume_until, required};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name, wait_until};
use changeflow::config::Config;
use changeflow::state::checkpoints::CheckpointStore;
use mongodb::bson::{Document, doc};
use rdkafka::message::OwnedMessage;

const HANDLED: &str = "changeflow_events_handled_total{kind=\"payment_requested\"}";

/// Inserts payments `{prefix}-{from}`…`{prefix}-{to - 1}`, 500 per round trip.
async fn insert_range(
    payments: &mongodb::Collection<Document>,
    prefix: &str,
    from: usize,
    to: usize,
) {
    let mut start = from;
    while start < to {
        let end = (start + 500).min(to);
        let docs: Vec<Document> = (start..end)
            .map(|i| payment(&format!("{prefix}-{i:05}"), i % 8, "PENDING"))
            .collect();
        payments.insert_many(docs).await.unwrap();
        start = end;
    }
}

/// Distinct payment ids among `records`.
fn subjects(records: &[OwnedMessage]) -> HashSet<String> {
    records
        .iter()
        .map(|r| required(r, "ce_subject").to_owned())
        .collect()
}

/// True once records of `count` distinct payments were seen.
fn all_payments(count: usize) -> impl FnMut(&OwnedMessage) -> bool {
    let mut seen = HashSet::new();
    move |record| {
        seen.insert(required(record, "ce_subject").to_owned());
        seen.len() == count
    }
}

/// Checks a repeated record is the same event (same id, same subject) and returns how many
/// records repeat an earlier one.
fn duplicates(records: &[OwnedMessage]) -> usize {
    let mut by_id: HashMap<String, String> = HashMap::new();
    let mut repeated = 0;
    for record in records {
        let id = required(record, "ce_id").to_owned();
        let subject = required(record, "ce_subject").to_owned();
        match by_id.get(&id) {
            Some(earlier) => {
                assert_eq!(earlier, &subject, "ce_id {id} names two different changes");
                repeated += 1;
            }
            None => {
                by_id.insert(id, subject);
            }
        }
    }
    repeated
}

#[tokio::test]
async fn broker_outage_loses_nothing_and_the_checkpoint_waits_for_delivery() {
    let _faults = crate::common::exclusive().await;
    let mut broker = OwnBroker::start().await;
    let db_name = unique_name("outage");
    let db = mongo().await.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut config = kafka_only_config(&db_name);
    config.kafka.brokers = broker.address();
    // Longer than the outage: librdkafka keeps retrying the records itself.
    config.kafka.delivery_timeout_ms = 60_000;
    config.engine.max_in_flight_events = 500;
    config.checkpoint.every_events = 100;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    insert_range(&payments, "pay", 0, 2500).await;
    wait_until(DEADLINE, "500 events delivered", || async {
        (process.metric(HANDLED).await >= 500.0).then_some(())
    })
    .await;
    broker.stop();
    let stopped = tokio::time::Instant::now();
    insert_range(&payments, "pay", 2500, 5000).await;

    // Nothing can be acknowledged now, so nothing may be checkpointed: once the requests in
    // flight at the stop have failed, the stored position stays where it is.
    let store = CheckpointStore::new(&db);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frozen = store.load(&db_name).await.unwrap().expect("a checkpoint");
    let handled_frozen = process.metric(HANDLED).await;
    let mut peak_rss = process.rss_mib();
    while stopped.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = store.load(&db_name).await.unwrap().expect("a checkpoint");
        assert_eq!(
            now.token, frozen.token,
            "the checkpoint moved while the broker was down"
        );
        assert_eq!(
            process.metric(HANDLED).await,
            handled_frozen,
            "nothing handled"
        );
        peak_rss = peak_rss.max(process.rss_mib());
    }
    assert!(
        handled_frozen < 5000.0,
        "the outage must land mid-stream ({handled_frozen} handled)"
    );
    broker.resume().await;

    let records = consume_until(
        &broker.address(),
        &topic,
        Duration::from_secs(120),
        Duration::from_secs(2),
        all_payments(5000),
    )
    .await;
    let repeated = duplicates(&records);
    eprintln!(
        "outage: {handled_frozen} handled before it, {} records after, {repeated} repeated, \
         changeflow peak RSS during it {peak_rss:.1} MiB",
        records.len()
    );
    assert_eq!(subjects(&records).len(), 5000, "every event at least once");
    assert!(
        peak_rss < 150.0,
        "memory stays bounded while the broker is away: {peak_rss:.1} MiB"
    );
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(DEADLINE).await;
    assert!(status.success(), "exit {status}:\n{}", process.log());
}

#[tokio::test]
async fn sigkill_mid_stream_repeats_at_most_the_read_ahead_bound() {
    let _faults = crate::common::exclusive().await;
    let db_name = unique_name("kcrash");
    let db = mongo().await.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut config = kafka_only_config(&db_name);
    config.engine.max_in_flight_events = 200;
    config.checkpoint.every_events = 100;
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    let total = 10_000;
    insert_range(&payments, "pay", 0, total).await;
    wait_until(DEADLINE, "1000 events delivered", || async {
        (process.metric(HANDLED).await >= 1000.0).then_some(())
    })
    .await;
    let handled_at_kill = process.metric(HANDLED).await;
    process.signal(libc::SIGKILL);
    process.wait_exit(DEADLINE).await;
    assert!(
        handled_at_kill < total as f64,
        "the kill must land mid-stream ({handled_at_kill} handled)"
    );

    let (_restarted, records, repeated) = restart_and_count_repeats(&config, total).await;
    eprintln!(
        "crash: {handled_at_kill} handled at SIGKILL, {records} records, {repeated} repeated \
         (bound {})",
        config.engine.max_in_flight_events
    );
}

/// Restarts changeflow after a SIGKILL and reads its payments topic until all `total`
/// payments are there. Checks that each arrived and that at most
/// `engine.max_in_flight_events` were sent twice: reading stops that far past the newest
/// stored checkpoint, however slow its writes, so only those can have reached Kafka and be
/// sent again. Returns the process, the number of records and of repeats.
async fn restart_and_count_repeats(config: &Config, total: usize) -> (Process, usize, usize) {
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut restarted = Process::spawn(config);
    restarted.wait_healthy().await;
    let records = consume_until(
        &kafka_brokers(),
        &topic,
        Duration::from_secs(120),
        Duration::from_secs(2),
        all_payments(total),
    )
    .await;
    let repeated = duplicates(&records);
    let bound = config.engine.max_in_flight_events;
    assert_eq!(subjects(&records).len(), total, "every event at least once");
    assert!(
        repeated <= bound,
        "{repeated} events repeated; reading may run {bound} ahead of the stored checkpoint"
    );
    (restarted, records.len(), repeated)
}

/// Every checkpoint write of the process named `app` waits this long on the server.
const SLOW_WRITE_MS: i64 = 2000;

#[tokio::test]
async fn slow_checkpoint_writes_pause_reading_so_a_crash_repeats_at_most_the_bound() {
    let _faults = crate::common::exclusive().await;
    let server = OwnMongod::start_with(Options {
        test_commands: true,
        ..Options::default()
    })
    .await;
    let root = server.client().await;
    let db_name = unique_name("kslow");
    let payments = root.database(&db_name).collection::<Document>("payments");
    let mut config = kafka_only_config(&db_name);
    let app = format!("changeflow-{db_name}");
    config.mongodb.uri = format!("{}&appName={app}", server.uri_with(PASSWORD_IN_URI));
    config.engine.max_in_flight_events = 200;
    config.checkpoint.every_events = 50;
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    // Checkpoints are stored with `update`; nothing else of a Kafka-only run updates on the
    // hot path. The fail point delays them, then lets them through.
    let admin = root.database("admin");
    admin
        .run_command(
            doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": {
                "failCommands": ["update"], "blockConnection": true,
                "blockTimeMS": SLOW_WRITE_MS, "appName": &app,
            }},
        )
        .await
        .expect("configureFailPoint");
    let total = 3000;
    insert_range(&payments, "pay", 0, total).await;
    wait_until(DEADLINE, "events delivered", || async {
        (process.metric(HANDLED).await >= 200.0).then_some(())
    })
    .await;
    // Unbounded, all 3000 would be delivered in a fraction of a second; bounded, reading
    // waits for each slow write and moves about 200 events per write.
    tokio::time::sleep(Duration::from_millis(3 * SLOW_WRITE_MS as u64)).await;
    let handled_at_kill = process.metric(HANDLED).await;
    let paused = process
        .metric(&format!(
            "changeflow_dispatch_paused_seconds_total{{on=\"checkpoint\",stream=\"{db_name}\"}}"
        ))
        .await;
    process.signal(libc::SIGKILL);
    process.wait_exit(DEADLINE).await;
    admin
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .expect("fail point off");
    assert!(
        handled_at_kill < total as f64,
        "reading did not wait for the slow checkpoint writes: {handled_at_kill} of {total} \
         handled in {} ms",
        3 * SLOW_WRITE_MS
    );

    assert!(
        paused > 1.0,
        "/metrics shows {paused} s held back for checkpoint writes of {SLOW_WRITE_MS} ms each"
    );

    let (mut restarted, records, repeated) = restart_and_count_repeats(&config, total).await;
    eprintln!(
        "slow checkpoints: {handled_at_kill} handled at SIGKILL, {paused:.1} s paused, \
         {records} records, {repeated} repeated (bound {})",
        config.engine.max_in_flight_events
    );
    restarted.signal(libc::SIGTERM);
    let status = restarted.wait_exit(DEADLINE).await;
    assert!(status.success(), "exit {status}:\n{}", restarted.log());
}

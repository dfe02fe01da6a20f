//! A stop always ends: SIGTERM ends the process within `engine.shutdown_timeout_ms` plus
//! the documented margin whatever the broker, the handlers or the server are doing, a
//! second signal ends it at once, and what was not finished runs after the restart.

mod common;

use std::time::{Duration, Instant};

use changeflow::config::Config;
use changeflow::shutdown::MARGIN;
use common::app::{
    Process, config, kafka_only_config, outcomes_and_counters, payment, wait_all_settled,
};
use common::broker::OwnBroker;
use common::own_mongod::{Options, OwnMongod, PASSWORD_IN_URI};
use common::records::consume_until;
use common::{DEADLINE, mongo, unique_name, wait_until};
use mongodb::bson::{Document, doc};
use rdkafka::message::Message;

/// The drain timeout the tests give: short, so a stop that waits it out is quick.
const DRAIN_MS: u64 = 2_000;
/// Allowance for the test's own polling and process start-up, beyond the promise.
const SLACK: Duration = Duration::from_secs(2);

/// Sends SIGTERM and asserts the process is gone within the drain timeout plus the margin;
/// returns how long it took and its exit code.
async fn stop_within_bound(process: &mut Process, config: &Config) -> (Duration, Option<i32>) {
    let bound = Duration::from_millis(config.engine.shutdown_timeout_ms) + MARGIN;
    let asked = Instant::now();
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(bound + SLACK).await;
    let took = asked.elapsed();
    assert!(
        took <= bound + SLACK,
        "the stop took {took:?}, more than shutdown_timeout_ms + margin ({bound:?})"
    );
    (took, status.code())
}

async fn insert(payments: &mongodb::Collection<Document>, from: usize, to: usize, product: usize) {
    let docs: Vec<Document> = (from..to)
        .map(|i| payment(&format!("p-{i:05}"), product, "PENDING"))
        .collect();
    payments.insert_many(docs).await.unwrap();
}

#[tokio::test]
async fn a_stop_ends_in_time_with_the_broker_down_and_nothing_is_lost() {
    let mut broker = OwnBroker::start().await;
    let db_name = unique_name("stopkafka");
    let db = mongo().await.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut config = kafka_only_config(&db_name);
    config.kafka.brokers = broker.address();
    // librdkafka keeps retrying for a minute: the records stay in flight through the stop.
    config.kafka.delivery_timeout_ms = 60_000;
    config.engine.shutdown_timeout_ms = DRAIN_MS;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    insert(&payments, 0, 200, 0).await;
    wait_until(DEADLINE, "some payments published", || async {
        let handled = process
            .metric("changeflow_events_handled_total{kind=\"payment_requested\"}")
            .await;
        (handled >= 1.0).then_some(())
    })
    .await;
    broker.stop();
    insert(&payments, 200, 400, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (took, code) = stop_within_bound(&mut process, &config).await;
    eprintln!("broker down: stopped in {took:?}, exit code {code:?}");

    // Unfinished events stayed behind the checkpoint: the next run publishes them.
    broker.resume().await;
    let mut restarted = Process::spawn(&config);
    restarted.wait_healthy().await;
    let mut ids = std::collections::HashSet::new();
    let records = consume_until(
        &broker.address(),
        &topic,
        Duration::from_secs(120),
        Duration::from_secs(1),
        |record| {
            if let Some(key) = record.key() {
                ids.insert(key.to_vec());
            }
            ids.len() >= 400
        },
    )
    .await;
    assert!(records.len() >= 400, "{} records", records.len());
    let (took, code) = stop_within_bound(&mut restarted, &config).await;
    assert_eq!(
        code,
        Some(0),
        "a stop with nothing stuck is clean ({took:?})"
    );
}

/// An own server with fail points, and a configuration naming this run's `appName`.
async fn server_with_fail_points(prefix: &str) -> (OwnMongod, mongodb::Client, Config, String) {
    let server = OwnMongod::start_with(Options {
        test_commands: true,
        ..Options::default()
    })
    .await;
    let root = server.client().await;
    let db_name = unique_name(prefix);
    let mut config = config(&db_name);
    let app = format!("changeflow-{db_name}");
    config.mongodb.uri = format!("{}&appName={app}", server.uri_with(PASSWORD_IN_URI));
    config.engine.shutdown_timeout_ms = DRAIN_MS;
    (server, root, config, app)
}

async fn fail_point(root: &mongodb::Client, data: Document) {
    root.database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": data})
        .await
        .expect("configureFailPoint");
}

async fn fail_point_off(root: &mongodb::Client) {
    root.database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .expect("fail point off");
}

#[tokio::test]
async fn a_stop_ends_in_time_with_handlers_stuck_in_retries_and_a_second_signal_ends_at_once() {
    let (server, root, mut config, app) = server_with_fail_points("stopretry").await;
    let db_name = config.payments.database.clone();
    let db = root.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    // Every write of this run fails as if the primary were shutting down: the status
    // updater and the counters retry without end, and so do the checkpoint writes.
    fail_point(
        &root,
        doc! {"failCommands": ["update", "insert", "commitTransaction"], "errorCode": 91,
        "appName": &app},
    )
    .await;
    insert(&payments, 0, 100, 1).await;
    wait_until(DEADLINE, "handlers retrying", || async {
        process.log().contains("retrying").then_some(())
    })
    .await;
    let (took, code) = stop_within_bound(&mut process, &config).await;
    eprintln!("handlers stuck in retries: stopped in {took:?}, exit code {code:?}");

    // A second signal does not wait for the drain at all.
    config.engine.shutdown_timeout_ms = 60_000;
    let mut patient = Process::spawn(&config);
    patient.wait_healthy().await;
    patient.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    patient.signal(libc::SIGTERM);
    let status = patient.wait_exit(Duration::from_secs(5)).await;
    eprintln!("second SIGTERM: exited in {:?} ({status})", asked.elapsed());

    // What was stuck stayed behind the checkpoint: with the server healthy, the next run
    // settles and counts every payment exactly.
    fail_point_off(&root).await;
    let mut restarted = Process::spawn(&config);
    restarted.wait_healthy().await;
    wait_all_settled(&db, Duration::from_secs(60)).await;
    wait_until(
        Duration::from_secs(60),
        "counters equal to the outcomes",
        || async {
            let (outcomes, counters) = outcomes_and_counters(&db).await;
            let settled: i64 = outcomes.values().map(|(s, f)| s + f).sum();
            (settled == 100 && counters == outcomes).then_some(())
        },
    )
    .await;
    config.engine.shutdown_timeout_ms = DRAIN_MS;
    let (_, code) = stop_within_bound(&mut restarted, &config).await;
    assert_eq!(code, Some(0));
    drop(server);
}

#[tokio::test]
async fn a_stop_ends_in_time_while_the_server_does_not_answer() {
    let (server, root, config, app) = server_with_fail_points("stopfrozen").await;
    let payments = root
        .database(&config.payments.database)
        .collection::<Document>("payments");
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    // The server takes every command of this run and never answers: the stream, the
    // handlers' writes and the checkpoint writes all hang on open connections.
    fail_point(
        &root,
        doc! {"failCommands": ["getMore", "aggregate", "update", "insert", "find",
                         "commitTransaction", "distinct", "delete"],
        "blockConnection": true, "blockTimeMS": 600_000, "appName": &app},
    )
    .await;
    insert(&payments, 0, 50, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (took, code) = stop_within_bound(&mut process, &config).await;
    eprintln!("server frozen: stopped in {took:?}, exit code {code:?}");
    // Turning the fail point off would wait for the blocked commands; the server goes.
    drop(server);
}

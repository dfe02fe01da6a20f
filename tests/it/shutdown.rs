//! Stuck is not idle, and a stop always ends. With the broker down, handlers failing on
//! every write, or a server that takes commands and never answers, `/healthz` turns 503
//! naming the stream, the event, the handler and the last error (an idle stream stays
//! 200), and SIGTERM ends the process within `engine.shutdown_timeout_ms` plus the
//! documented margin; a second signal ends it at once; what was not finished runs after
//! the restart.

use std::time::{Duration, Instant};

use crate::common::app::{
    Process, config, kafka_only_config, outcomes_and_counters, payment, run_cli, wait_all_settled,
};
use crate::common::broker::OwnBroker;
use crate::common::own_mongod::{Options, OwnMongod, PASSWORD_IN_URI};
use crate::common::records::consume_until;
use crate::common::{DEADLINE, mongo, unique_name, wait_until};
use changeflow::cmd::shutdown::MARGIN;
use changeflow::config::Config;
use mongodb::bson::{Document, doc};
use rdkafka::message::Message;

/// The drain timeout the tests give: short, so a stop that waits it out is quick.
const DRAIN_MS: u64 = 2_000;
/// `health.stuck_after_ms` of the tests.
const STUCK_AFTER_MS: u64 = 1_500;

/// `/healthz`: its status code and body.
async fn healthz(process: &Process) -> (u16, serde_json::Value) {
    process.healthz().await.expect("GET /healthz answered")
}

/// Waits until `/healthz` says `stream` is stuck for `cause`; returns that entry.
async fn wait_stuck(process: &Process, stream: &str, cause: &str) -> serde_json::Value {
    wait_until(
        DEADLINE,
        &format!("/healthz to report {stream} stuck ({cause})"),
        || async {
            let (code, body) = healthz(process).await;
            let entry = body["stuck"][stream]
                .as_array()?
                .iter()
                .find(|s| s["cause"] == cause)?
                .clone();
            assert_eq!(code, 503, "stuck answers 503: {body}");
            assert_eq!(body["status"], "stuck", "{body}");
            Some(entry)
        },
    )
    .await
}
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
    let _faults = crate::common::exclusive().await;
    let mut broker = OwnBroker::start().await;
    let db_name = unique_name("stopkafka");
    let db = mongo().await.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut config = kafka_only_config(&db_name);
    config.kafka.brokers = broker.address();
    // librdkafka keeps retrying for a minute: the records stay in flight through the stop.
    config.kafka.delivery_timeout_ms = 60_000;
    config.engine.shutdown_timeout_ms = DRAIN_MS;
    config.health.stuck_after_ms = STUCK_AFTER_MS;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    // Idle is not stuck: nothing happens for twice the bound, and all is well.
    tokio::time::sleep(Duration::from_millis(2 * STUCK_AFTER_MS + 500)).await;
    let (code, body) = healthz(&process).await;
    assert_eq!(
        (code, &body["status"]),
        (200, &serde_json::json!("ok")),
        "{body}"
    );
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
    let stuck = wait_stuck(&process, &db_name, "handlers").await;
    eprintln!("broker down: {stuck}");
    assert!(stuck["event_id"].is_string(), "{stuck}");
    let series = format!("changeflow_stream_stuck{{cause=\"handlers\",stream=\"{db_name}\"}}");
    assert_eq!(process.metric(&series).await, 1.0, "{series}");
    // `changeflow status` shows it too (from the run's heartbeat, stamped every 5 s).
    let line = wait_until(DEADLINE, "`status` to show the stream stuck", || async {
        let out = run_cli(&config, &["status"]).await;
        out.stdout
            .lines()
            .find(|l| l.contains("STUCK") && l.contains("kafka"))
            .map(str::to_owned)
    })
    .await;
    eprintln!("status: {line}");
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
    config.health.stuck_after_ms = STUCK_AFTER_MS;
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
    let _faults = crate::common::exclusive().await;
    let (server, root, mut config, app) = server_with_fail_points("stopretry").await;
    let db_name = config.payments.database.clone();
    let db = root.database(&db_name);
    let payments = db.collection::<Document>("payments");
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    // Every write of this run fails (MaxTimeMSExpired: not a refusal of the write itself):
    // the status updater and the counters retry without end, and so do the checkpoint
    // writes.
    fail_point(
        &root,
        doc! {"failCommands": ["update", "insert", "commitTransaction"], "errorCode": 50,
        "appName": &app},
    )
    .await;
    insert(&payments, 0, 100, 1).await;
    let stuck = wait_stuck(&process, &db_name, "handlers").await;
    eprintln!("handlers failing: {stuck}");
    assert!(stuck["event_id"].is_string(), "{stuck}");
    assert!(
        stuck["handler"].is_string(),
        "the failing handler is named: {stuck}\n{}",
        process.log()
    );
    assert!(
        stuck["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("MaxTimeMSExpired")),
        "the last error is shown: {stuck}"
    );
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
    let _faults = crate::common::exclusive().await;
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
    let stuck = wait_stuck(&process, &config.payments.database, "source").await;
    eprintln!("server frozen: {stuck}");
    let (took, code) = stop_within_bound(&mut process, &config).await;
    eprintln!("server frozen: stopped in {took:?}, exit code {code:?}");
    // Turning the fail point off would wait for the blocked commands; the server goes.
    drop(server);
}

//! Checkpoint writes while no majority acknowledges anything. On a primary, a secondary
//! and an arbiter with the secondary down, the primary stays primary and takes `w:1`
//! writes, but a majority write waits. changeflow handles a backlog of changes that were
//! majority-committed before the loss; it cannot store a checkpoint, so reading must pause
//! `engine.max_in_flight_events` past the last stored one, `/healthz` and the metrics must
//! say why, and everything must go on by itself once the secondary is back.

use std::time::{Duration, Instant};

use crate::common::app::{Process, insert_pending, kafka_only_config};
use crate::common::replica_set::ReplicaSet;
use crate::common::{create_topic, unique_name, wait_until};
use changeflow::cmd::setup;
use changeflow::state::checkpoints::CheckpointStore;
use mongodb::bson::Document;
use mongodb::options::{DatabaseOptions, ReadConcern};

const HANDLED: &str = "changeflow_events_handled_total{kind=\"payment_requested\"}";
const BOUND: usize = 200;
const BACKLOG: usize = 2000;

#[tokio::test]
async fn without_a_majority_reading_pauses_at_the_bound_and_says_why() {
    let _faults = crate::common::exclusive().await;
    let mut set = ReplicaSet::start_with_arbiter().await;
    let client = set.client().await;
    let name = unique_name("nomajority");
    let mut config = kafka_only_config(&name);
    config.mongodb.uri = set.uri();
    config.engine.max_in_flight_events = BOUND;
    config.health.stuck_after_ms = 3000;
    create_topic(&config.kafka.topic(&config.kafka.topics.payments), 3).await;
    setup::run(&client, &config).await.unwrap();
    let db = client.database(&name);
    let payments = db.collection::<Document>("payments");
    // What a majority has: a checkpoint write waiting for its acknowledgement is already
    // applied on the primary, and a local read would see it.
    let store = CheckpointStore::new(
        &client.database_with_options(
            &name,
            DatabaseOptions::builder()
                .read_concern(ReadConcern::majority())
                .build(),
        ),
    );

    // A first run stores a checkpoint, then stops; the backlog is written after it and
    // reaches both data members.
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    insert_pending(&payments, "before", 10, 1).await;
    wait_until(Duration::from_secs(30), "the first payments", || async {
        (run.metric(HANDLED).await >= 10.0).then_some(())
    })
    .await;
    run.signal(libc::SIGTERM);
    assert!(run.wait_exit(Duration::from_secs(30)).await.success());
    let before = store
        .load(&name)
        .await
        .unwrap()
        .expect("a stored checkpoint");
    insert_pending(&payments, "backlog", BACKLOG, 1).await;
    set.wait_majority_writes().await;

    // The secondary goes: the arbiter keeps the primary primary, no majority is left.
    let primary = set.primary().await.expect("a primary");
    assert_eq!(primary, 0, "member 0 is the preferred primary");
    set.kill(1);
    let lost = Instant::now();
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;

    let paused =
        format!("changeflow_dispatch_paused_seconds_total{{on=\"checkpoint\",stream=\"{name}\"}}");
    let (code, body) = run
        .wait_unhealthy(
            Duration::from_secs(60),
            "/healthz to report the checkpoint that cannot be stored",
        )
        .await;
    let detected = lost.elapsed();
    let handled = run.metric(HANDLED).await;
    eprintln!("no majority: /healthz {code} after {detected:?}, {handled} handled: {body}");
    assert_eq!(code, 503, "{body}");
    let stuck = body["stuck"].to_string();
    assert!(
        stuck.contains("\"checkpoint\"") && stuck.contains("majority"),
        "/healthz does not say the checkpoint waits for a majority: {body}"
    );
    assert!(
        handled >= 1.0 && handled <= BOUND as f64,
        "reading must stop {BOUND} past the stored checkpoint: {handled} handled"
    );
    let held = run.metric(&paused).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        run.metric(HANDLED).await,
        handled,
        "reading went on past the bound"
    );
    let held_more = run.metric(&paused).await;
    assert!(
        held_more >= held + 1.5,
        "the pause metric does not grow: {held} then {held_more}"
    );
    assert_eq!(
        run.metric(&format!(
            "changeflow_stream_stuck{{cause=\"checkpoint\",stream=\"{name}\"}}"
        ))
        .await,
        1.0
    );
    assert_eq!(
        store
            .load(&name)
            .await
            .unwrap()
            .expect("the checkpoint")
            .token,
        before.token,
        "no checkpoint can have been acknowledged by a majority"
    );

    // The secondary comes back: everything goes on without a restart.
    set.restart(1).await;
    let back = Instant::now();
    set.wait_secondary(1).await;
    wait_until(Duration::from_secs(90), "the whole backlog", || async {
        (run.metric(HANDLED).await >= BACKLOG as f64).then_some(())
    })
    .await;
    let drained = back.elapsed();
    wait_until(Duration::from_secs(30), "/healthz 200 again", || async {
        let (code, _) = run.healthz().await?;
        (code == 200).then_some(())
    })
    .await;
    let after = store.load(&name).await.unwrap().expect("the checkpoint");
    assert_ne!(after.token, before.token, "the checkpoint moved on");
    assert!(run.is_running());
    eprintln!(
        "no majority: reading held at {handled} events (bound {BOUND}) for {:.1} s; the backlog \
         of {BACKLOG} handled {drained:?} after the secondary restarted",
        run.metric(&paused).await
    );
}

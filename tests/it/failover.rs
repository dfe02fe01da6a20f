//! The faults a replica set produces every month, under load, on a 3-member set this test
//! owns: the primary stepped down, the primary SIGKILLed and restarted, and writes that
//! roll back. After each: every payment settled, counters and `memory_stats` exact, every
//! change on Kafka with each payment's `requested` before its outcome, and the same
//! changeflow process still running. One test, phases in order, so CI runs one set of
//! three servers at a time.

use std::time::{Duration, Instant};

use crate::common::app::{Process, memory_config, payment, wait_settled_and_counted};
use crate::common::load::{
    Load, RECOVERY, add, kafka_holds_every_change, memory_exact, memory_load, time_to_first_handled,
};
use crate::common::replica_set::ReplicaSet;
use crate::common::{unique_name, wait_until};
use changeflow::cmd::demo::memory;
use changeflow::cmd::setup;
use changeflow::config::Config;
use mongodb::Database;
use mongodb::bson::{Document, doc};

/// One fault under load: payments and the memory workload run while `fault` happens.
/// Returns the time from the fault to the first payment after it being handled.
async fn under_load<F, Fut>(
    db: &Database,
    config: &Config,
    run: &Process,
    expected_memory: &mut memory::Expected,
    phase: &str,
    fault: F,
) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let load = Load::start(
        db.collection("payments"),
        run.base_url.clone(),
        format!("{phase}-load"),
    );
    let memory = {
        let (db, config, id) = (db.clone(), config.clone(), format!("{phase}-m"));
        tokio::spawn(async move { memory_load(&db, &config, &id).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let at = Instant::now();
    fault().await;
    let first = time_to_first_handled(db, at, &format!("{phase}-first-after")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = load.finish().await;
    add(expected_memory, memory.await.expect("memory task"));
    wait_settled_and_counted(db, RECOVERY, phase).await;
    memory_exact(db, expected_memory, phase).await;
    eprintln!(
        "{phase}: {written} payments written under load; first payment after the fault handled \
         {first:?} after it"
    );
    first
}

/// Kills both secondaries, has the primary take a `w:1` payment that so reaches no other
/// member, kills it, restarts the secondaries (one of them wins the election) and then
/// the old primary, which rolls the payment back. Returns the payment's id, after
/// checking nothing of it exists. (Pausing the secondaries with SIGSTOP is not enough:
/// the primary's answer to their pending oplog fetch waits in the socket buffer and is
/// applied when they continue.)
async fn rollback(set: &mut ReplicaSet, db: &Database) -> String {
    let id = "rolled-back-1".to_owned();
    let old = set.primary().await.expect("a primary");
    let primary = set.direct(old).await;
    let payments = primary
        .database(db.name())
        .collection::<Document>("payments");
    for s in set.others(old) {
        set.kill(s);
    }
    // Before the primary notices it has lost its majority (2 s) and steps down.
    payments
        .insert_one(payment(&id, 0, "PENDING"))
        // Journaled: the SIGKILL must not lose it, or there is nothing to roll back.
        .write_concern(
            mongodb::options::WriteConcern::builder()
                .w(mongodb::options::Acknowledgment::Nodes(1))
                .journal(true)
                .build(),
        )
        .await
        .expect("a w:1 write to the primary");
    set.kill(old);
    let fault = Instant::now();
    for s in set.others(old) {
        set.restart(s).await;
    }
    let (new, election) = set.wait_majority_writes().await;
    set.restart(old).await;
    wait_until(
        Duration::from_secs(60),
        "the old primary's rollback",
        || async { set.log(old).contains("Rollback complete").then_some(()) },
    )
    .await;
    set.wait_secondary(old).await;
    assert_eq!(
        db.collection::<Document>("payments")
            .count_documents(doc! {"_id": &id})
            .await
            .unwrap(),
        0,
        "the rolled-back payment exists"
    );
    assert_eq!(
        db.collection::<Document>("changeflow_dead_letters")
            .count_documents(doc! {"event.documentKey._id": &id})
            .await
            .unwrap(),
        0
    );
    eprintln!(
        "rollback: member {old} rolled back {id}; member {new} took majority writes \
         {election:?} after its restart ({:?} after the primary was killed)",
        fault.elapsed()
    );
    id
}

/// Stops both secondaries (SIGSTOP): the primary steps down, no majority is left.
/// `/healthz` must turn from 200 and say why; once they continue, everything resumes.
async fn majority_lost(set: &mut ReplicaSet, db: &Database, run: &Process) {
    let (primary, _) = set.wait_majority_writes().await;
    let payments = db.collection::<Document>("payments");
    crate::common::app::insert_pending(&payments, "before-loss", 20, 1).await;
    let secondaries = set.others(primary);
    for &s in &secondaries {
        set.pause(s);
    }
    let lost = Instant::now();
    let (code, body) = run
        .wait_unhealthy(Duration::from_secs(90), "/healthz to report the loss")
        .await;
    let detected = lost.elapsed();
    eprintln!("majority lost: /healthz {code} after {detected:?}: {body}");
    assert_eq!(code, 503, "{body}");
    assert!(
        body["mongodb"]
            .as_str()
            .is_some_and(|m| m.contains("no writable primary")),
        "/healthz does not say why: {body}"
    );
    assert_eq!(
        run.metric("changeflow_mongodb_writable_primary").await,
        0.0,
        "the metric does not say why"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for &s in &secondaries {
        set.resume(s);
    }
    let (_, election) = set.wait_majority_writes().await;
    let first = time_to_first_handled(db, Instant::now(), "after-loss").await;
    eprintln!(
        "majority back: a primary took majority writes {election:?} after the members \
         continued; first payment handled {first:?} after that"
    );
}

#[tokio::test]
async fn step_down_kill_and_rollback_under_load_lose_nothing_and_add_nothing() {
    let _faults = crate::common::exclusive().await;
    let mut set = ReplicaSet::start(3).await;
    let client = set.client().await;
    let name = unique_name("failover");
    let mut config = memory_config(&name);
    config.mongodb.uri = set.uri();
    crate::common::create_topic(&config.kafka.topic(&config.kafka.topics.payments), 3).await;
    setup::run(&client, &config).await.unwrap();
    let db = client.database(&name);
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    let mut expected_memory = memory::Expected::new();

    // 1. The primary steps down.
    let step_down = under_load(
        &db,
        &config,
        &run,
        &mut expected_memory,
        "stepdown",
        || async {
            set.step_down().await;
        },
    )
    .await;

    // 2. The primary is killed; a secondary wins; the old primary comes back.
    let killed = set.primary().await.expect("a primary");
    let members = &mut set;
    let kill = under_load(
        &db,
        &config,
        &run,
        &mut expected_memory,
        "kill",
        move || {
            members.kill(killed);
            async {}
        },
    )
    .await;
    set.restart(killed).await;
    set.wait_secondary(killed).await;

    // 2b. The primary freezes (SIGSTOP) for 6 s: connections stay open, nothing answers;
    // the others elect a new primary, and the frozen one steps down once it goes on.
    let frozen = set.primary().await.expect("a primary");
    let members = &set;
    let freeze = under_load(
        &db,
        &config,
        &run,
        &mut expected_memory,
        "freeze",
        move || async move {
            members.pause(frozen);
            tokio::time::sleep(Duration::from_secs(6)).await;
            members.resume(frozen);
        },
    )
    .await;
    set.wait_secondary(frozen).await;

    // 3. A write that only the primary saw rolls back.
    let rolled_back = rollback(&mut set, &db).await;
    wait_settled_and_counted(&db, RECOVERY, "rollback").await;

    // 4. Two members down: no majority, no primary; changeflow says so and waits.
    majority_lost(&mut set, &db, &run).await;
    wait_settled_and_counted(&db, RECOVERY, "majority lost").await;

    assert!(
        run.is_running(),
        "changeflow exited during the faults:\n{}",
        run.log()
    );
    kafka_holds_every_change(&config, &db, &rolled_back).await;

    // The stored checkpoints resume cleanly: a second run from them handles new work.
    run.signal(libc::SIGTERM);
    assert!(run.wait_exit(Duration::from_secs(30)).await.success());
    let mut again = Process::spawn(&config);
    again.wait_healthy().await;
    time_to_first_handled(&db, Instant::now(), "after-restart").await;
    wait_settled_and_counted(&db, RECOVERY, "restart").await;
    eprintln!(
        "failover: first payment handled {step_down:?} after a step-down, {kill:?} after a primary SIGKILL, {freeze:?} after a primary frozen for 6 s"
    );
}

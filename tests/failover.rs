//! The faults a replica set produces every month, under load, on a 3-member set this test
//! owns: the primary stepped down, the primary SIGKILLed and restarted, and writes that
//! roll back. After each: every payment settled, counters and `memory_stats` exact, every
//! change on Kafka with each payment's `requested` before its outcome, and the same
//! changeflow process still running. One test, phases in order, so CI runs one set of
//! three servers at a time.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use changeflow::config::Config;
use changeflow::demo::memory;
use changeflow::setup;
use common::app::{
    Process, memory_config, memory_stats_by_user, payment, wait_settled_and_counted,
};
use common::records::{consume_until, required};
use common::replica_set::ReplicaSet;
use common::{kafka_brokers, unique_name, wait_until};
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};
use rdkafka::message::OwnedMessage;
use serde_json::json;

/// How long a fault may take to be absorbed (election, reopen, retries) before the
/// payments it touched are settled.
const RECOVERY: Duration = Duration::from_secs(90);

/// Payments written while a fault happens: direct inserts and `POST /payments`, each
/// retried until it lands, as a client of a real service would.
struct Load {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(payments: Collection<Document>, base_url: String, prefix: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let (stop_flag, count) = (stop.clone(), written.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0usize;
            while !stop_flag.load(Ordering::Relaxed) {
                let id = format!("{prefix}-{i}");
                loop {
                    match payments.insert_one(payment(&id, i % 5, "PENDING")).await {
                        Ok(_) => break,
                        // A retry of a write that landed before the connection broke.
                        Err(e) if e.to_string().contains("E11000") => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                let body = json!({"productCode": format!("http-{}", i % 3),
                    "productName": "Over HTTP", "unitPrice": "1.25", "quantity": 2});
                // A POST the server answers with an error may still have written the
                // payment; the checks look at what the database holds, not at this count.
                for _ in 0..50 {
                    let sent = http
                        .post(format!("{base_url}/payments"))
                        .json(&body)
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 202) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                count.fetch_add(2, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Load {
            stop,
            written,
            task,
        }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        self.written.load(Ordering::Relaxed)
    }
}

/// From `fault` to the first payment written after it being settled.
async fn time_to_first_handled(db: &Database, fault: Instant, id: &str) -> Duration {
    let payments = db.collection::<Document>("payments");
    loop {
        match payments.insert_one(payment(id, 0, "PENDING")).await {
            Ok(_) => break,
            Err(e) if e.to_string().contains("E11000") => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    wait_until(RECOVERY, &format!("{id} settled"), || async {
        payments
            .find_one(doc! {"_id": id, "status": {"$ne": "PENDING"}})
            .await
            .ok()
            .flatten()
    })
    .await;
    fault.elapsed()
}

/// Runs the memory workload of `run_id` and returns what `memory_stats` must hold after.
async fn memory_load(db: &Database, config: &Config, run_id: &str) -> memory::Expected {
    let workload = memory::Workload {
        users: 2,
        threads_per_user: 2,
        turns_per_thread: 4,
        seed: run_id.len() as u64,
        ..memory::Workload::default()
    };
    memory::run(db, &config.memory, workload, run_id, |_| {})
        .await
        .unwrap_or_else(|e| panic!("memory workload {run_id}: {e}"))
}

/// Adds `more` into `total`, field by field.
fn add(total: &mut memory::Expected, more: memory::Expected) {
    for (user, fields) in more {
        let mine = total.entry(user).or_default();
        for (field, n) in fields {
            *mine.entry(field).or_default() += n;
        }
    }
}

async fn memory_exact(db: &Database, expected: &memory::Expected, phase: &str) {
    let started = Instant::now();
    loop {
        let now = memory_stats_by_user(db).await;
        if &now == expected {
            return;
        }
        assert!(
            started.elapsed() < RECOVERY,
            "{phase}: memory_stats differ\nexpected {expected:#?}\ngot {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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

/// Every payment in the database has its `requested` record and then its outcome on
/// Kafka (per key, in that order); no record names a payment the database lacks.
async fn kafka_holds_every_change(config: &Config, db: &Database, rolled_back: &str) {
    let payments = common::app::all_documents(db, "payments").await;
    let ids: Vec<String> = payments
        .iter()
        .map(|p| match p.get("_id") {
            Some(mongodb::bson::Bson::String(s)) => s.clone(),
            Some(mongodb::bson::Bson::ObjectId(o)) => o.to_hex(),
            other => panic!("unexpected payment _id {other:?}"),
        })
        .collect();
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let wanted = ids.len();
    let mut outcome_seen: HashMap<String, bool> = HashMap::new();
    let records = consume_until(
        &kafka_brokers(),
        &topic,
        Duration::from_secs(120),
        Duration::from_secs(2),
        |record: &OwnedMessage| {
            let kind = required(record, "ce_type");
            if kind.ends_with(".confirmed.v1") || kind.ends_with(".failed.v1") {
                outcome_seen.insert(required(record, "ce_subject").to_owned(), true);
            }
            outcome_seen.len() == wanted
        },
    )
    .await;
    let mut by_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in &records {
        by_subject
            .entry(required(record, "ce_subject").to_owned())
            .or_default()
            .push(required(record, "ce_type").to_owned());
    }
    for id in &ids {
        let types = by_subject
            .get(id)
            .unwrap_or_else(|| panic!("no record of payment {id}"));
        let requested = types.iter().position(|t| t.ends_with(".requested.v1"));
        let outcome = types
            .iter()
            .position(|t| t.ends_with(".confirmed.v1") || t.ends_with(".failed.v1"));
        match (requested, outcome) {
            (Some(r), Some(o)) => assert!(r < o, "{id}: outcome before requested: {types:?}"),
            _ => panic!("{id}: records {types:?}"),
        }
    }
    assert!(
        !by_subject.contains_key(rolled_back),
        "the rolled-back payment {rolled_back} was published: {:?}",
        by_subject.get(rolled_back)
    );
    assert_eq!(
        by_subject.len(),
        ids.len(),
        "records name payments the database does not hold: {:?}",
        by_subject
            .keys()
            .filter(|k| !ids.contains(k))
            .collect::<Vec<_>>()
    );
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
    common::app::insert_pending(&payments, "before-loss", 20, 1).await;
    let secondaries = set.others(primary);
    for &s in &secondaries {
        set.pause(s);
    }
    let lost = Instant::now();
    let (code, body) = wait_until(
        Duration::from_secs(90),
        "/healthz to report the loss",
        || async {
            let response = reqwest::get(format!("{}/healthz", run.base_url))
                .await
                .ok()?;
            let code = response.status().as_u16();
            let body: serde_json::Value = response.json().await.ok()?;
            (code != 200).then_some((code, body))
        },
    )
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
    let mut set = ReplicaSet::start(3).await;
    let client = set.client().await;
    let name = unique_name("failover");
    let mut config = memory_config(&name);
    config.mongodb.uri = set.uri();
    common::create_topic(&config.kafka.topic(&config.kafka.topics.payments), 3).await;
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
        "failover: first payment handled {step_down:?} after a step-down, {kill:?} after a primary SIGKILL"
    );
}

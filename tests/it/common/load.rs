//! Load for the fault tests: payments written straight and over HTTP while faults happen,
//! the memory workload, and the checks that follow: every payment settled and counted,
//! `memory_stats` exact, and each payment's history on Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use changeflow::cmd::demo::memory;
use changeflow::config::Config;
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};
use rdkafka::message::OwnedMessage;
use serde_json::json;

use super::app::{memory_stats_by_user, payment};
use super::records::{consume_until, required};
use super::{kafka_brokers, wait_until};

/// How long a fault may take to be absorbed (election, reopen, retries) before the
/// payments it touched are settled.
pub const RECOVERY: Duration = Duration::from_secs(90);

/// Payments written while a fault happens: direct inserts and `POST /payments`, each
/// retried until it lands, as a client of a real service would.
pub struct Load {
    base_url: Arc<std::sync::Mutex<String>>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(payments: Collection<Document>, base_url: String, prefix: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let (stop_flag, count) = (stop.clone(), written.clone());
        let base_url = Arc::new(std::sync::Mutex::new(base_url));
        let target = base_url.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0usize;
            while !stop_flag.load(Ordering::Relaxed) {
                let id = format!("{prefix}-{i}");
                insert_until_landed(&payments, &id, i % 5).await;
                let body = json!({"productCode": format!("http-{}", i % 3),
                    "productName": "Over HTTP", "unitPrice": "1.25", "quantity": 2});
                // A POST the server answers with an error may still have written the
                // payment; the checks look at what the database holds, not at this count.
                for _ in 0..50 {
                    let base_url = target.lock().map(|u| u.clone()).unwrap_or_default();
                    if base_url.is_empty() {
                        // changeflow is restarting: the payment goes in directly meanwhile.
                        break;
                    }
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
            base_url,
            stop,
            written,
            task,
        }
    }

    /// Posts to `base_url` from now on (empty: post nothing, changeflow is restarting).
    pub fn retarget(&mut self, base_url: String) {
        if let Ok(mut url) = self.base_url.lock() {
            *url = base_url;
        }
    }

    pub async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        self.written.load(Ordering::Relaxed)
    }
}

/// From `fault` to the first payment written after it being settled.
pub async fn time_to_first_handled(db: &Database, fault: Instant, id: &str) -> Duration {
    let payments = db.collection::<Document>("payments");
    insert_until_landed(&payments, id, 0).await;
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

/// Inserts PENDING payment `id` of `product`, retrying through elections and cut
/// connections until it lands.
async fn insert_until_landed(payments: &Collection<Document>, id: &str, product: usize) {
    loop {
        match payments.insert_one(payment(id, product, "PENDING")).await {
            Ok(_) => return,
            // A retry of a write that landed before the connection broke.
            Err(e) if e.to_string().contains("E11000") => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs the memory workload of `run_id` and returns what `memory_stats` must hold after.
pub async fn memory_load(db: &Database, config: &Config, run_id: &str) -> memory::Expected {
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
pub fn add(total: &mut memory::Expected, more: memory::Expected) {
    for (user, fields) in more {
        let mine = total.entry(user).or_default();
        for (field, n) in fields {
            *mine.entry(field).or_default() += n;
        }
    }
}

pub async fn memory_exact(db: &Database, expected: &memory::Expected, phase: &str) {
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

/// What the payments topic held, checked against each payment's state machine.
#[derive(Debug)]
pub struct Histories {
    /// Payments checked.
    pub payments: usize,
    /// Records read.
    pub records: usize,
    /// Records that repeat an earlier one (same `ce_id`, same subject and type).
    pub repeats: usize,
}

/// Every payment in the database has its history on Kafka: `requested`, then exactly one
/// outcome (`confirmed` or `failed`; a repeat carries the same `ce_id`); ids name one
/// change each; no record names a payment the database lacks (`absent`: a rolled-back
/// write, say).
pub async fn kafka_holds_every_change(config: &Config, db: &Database, absent: &str) -> Histories {
    let payments = super::app::all_documents(db, "payments").await;
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
            if is_outcome(kind) {
                outcome_seen.insert(required(record, "ce_subject").to_owned(), true);
            }
            outcome_seen.len() == wanted
        },
    )
    .await;
    let mut by_id: HashMap<String, (String, String)> = HashMap::new();
    let mut repeats = 0;
    // Per subject, the types of its distinct changes in the order first seen.
    let mut by_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in &records {
        let id = required(record, "ce_id").to_owned();
        let subject = required(record, "ce_subject").to_owned();
        let kind = required(record, "ce_type").to_owned();
        match by_id.get(&id) {
            Some(earlier) => {
                assert_eq!(
                    earlier,
                    &(subject, kind),
                    "ce_id {id} names two different changes"
                );
                repeats += 1;
            }
            None => {
                by_id.insert(id, (subject.clone(), kind.clone()));
                by_subject.entry(subject).or_default().push(kind);
            }
        }
    }
    for id in &ids {
        let types = by_subject
            .get(id)
            .unwrap_or_else(|| panic!("no record of payment {id}"));
        let requested = types.iter().position(|t| t.ends_with(".requested.v1"));
        let outcomes: Vec<usize> = (0..types.len())
            .filter(|&i| is_outcome(&types[i]))
            .collect();
        match (requested, outcomes.as_slice()) {
            (Some(r), [o]) => assert!(r < *o, "{id}: outcome before requested: {types:?}"),
            _ => panic!("{id}: not requested then one outcome: {types:?}"),
        }
    }
    assert!(
        !by_subject.contains_key(absent),
        "{absent} was published: {:?}",
        by_subject.get(absent)
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
    Histories {
        payments: ids.len(),
        records: records.len(),
        repeats,
    }
}

fn is_outcome(kind: &str) -> bool {
    kind.ends_with(".confirmed.v1") || kind.ends_with(".failed.v1")
}

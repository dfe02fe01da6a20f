//! Roles: a capture instance reads the stream and publishes; handlers instances consume
//! the payments topic in a consumer group and run the handlers. Killing one handlers
//! instance moves its partitions to the others with no effect lost or applied twice;
//! payments whose `_id` is a BSON UUID settle as well as string ones.

use std::time::{Duration, Instant};

use changeflow::config::Config;
use mongodb::bson::{Document, Uuid, doc};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::app::{Process, config, payment, run_cli, wait_settled_and_counted};
use crate::common::{DEADLINE, mongo, unique_name, wait_until};

/// [`config`] whose routes compose when split: memory_stats runs with `--role all` only.
fn split_config(db_name: &str) -> Config {
    let mut config = config(db_name);
    config.routes.retain(|t| t != "memory_stats");
    config.kafka.partitions = 6;
    config.provider.latency_ms = 50;
    config
}

/// `n` PENDING payments; every fifth has a BSON UUID `_id` when `uuids` (the handlers
/// rebuild that key from the record's `idtype` extension).
async fn insert(db: &mongodb::Database, prefix: &str, n: usize, uuids: bool) {
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            let mut doc = payment(&format!("{prefix}-{i}"), i % 4, "PENDING");
            if uuids && i % 5 == 0 {
                doc.insert("_id", Uuid::new());
            }
            doc
        })
        .collect();
    db.collection::<Document>("payments")
        .insert_many(docs)
        .await
        .expect("payments");
}

async fn settled(db: &mongodb::Database) -> u64 {
    db.collection::<Document>("payments")
        .count_documents(doc! {"status": {"$ne": "PENDING"}})
        .await
        .unwrap_or(0)
}

#[tokio::test]
async fn three_handlers_and_one_capture_settle_everything_exactly_once_with_one_killed() {
    let db_name = unique_name("roles");
    let db = mongo().await.database(&db_name);
    let config = split_config(&db_name);
    let mut capture = Process::spawn_with(&config, &["--role", "capture"]);
    capture.wait_healthy().await;
    let mut handlers: Vec<Process> = (0..3)
        .map(|_| Process::spawn_with(&config, &["--role", "handlers"]))
        .collect();
    for h in &mut handlers {
        h.wait_healthy().await;
    }
    // `status` lists every instance with its role.
    let out = run_cli(&config, &["status", "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    let mut listed: Vec<(u64, String)> = status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            let pid = i["pid"].as_u64().unwrap_or(0);
            (pid, i["role"].as_str().unwrap_or("?").to_owned())
        })
        .collect();
    listed.sort();
    let mut expected: Vec<(u64, String)> = [(capture.pid(), "capture")]
        .into_iter()
        .chain(handlers.iter().map(|h| (h.pid(), "handlers")))
        .map(|(pid, role)| (u64::from(pid), role.to_owned()))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "{}", out.stdout);
    insert(&db, "first", 1000, false).await;
    wait_until(DEADLINE, "some payments settled", || async {
        (settled(&db).await >= 100).then_some(())
    })
    .await;
    // Midway: one handlers instance dies with work in flight.
    let mut killed = handlers.remove(1);
    killed.signal(libc::SIGKILL);
    killed.wait_exit(DEADLINE).await;
    let at_kill = settled(&db).await;
    let since = Instant::now();
    insert(&db, "second", 500, true).await;
    wait_settled_and_counted(
        &db,
        Duration::from_secs(120),
        "after a handlers instance died",
    )
    .await;
    eprintln!(
        "one of three handlers instances killed at {at_kill}/1000 settled; all 1500 settled \
         and counted {:.1} s later",
        since.elapsed().as_secs_f64()
    );
    // The capture instance ran no handler; the handlers instances handled everything.
    let handled = |p: &Process| {
        let p = p.base_url.clone();
        async move {
            let text = reqwest::get(format!("{p}/metrics"))
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics text");
            text.lines()
                .filter(|l| l.starts_with("changeflow_handler_duration_seconds_count"))
                .filter(|l| !l.contains("handler=\"kafka\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    assert_eq!(handled(&capture).await, 0.0, "capture runs no handler");
    for h in &handlers {
        assert!(
            handled(h).await > 0.0,
            "each surviving instance handled some"
        );
    }
    for process in handlers.iter_mut().chain([&mut capture]) {
        process.stop_cleanly().await;
    }
}

#[tokio::test]
async fn routes_that_would_drop_a_handlers_input_are_refused_when_split() {
    let db_name = unique_name("roles_refused");
    let mut config = split_config(&db_name);
    config
        .routes
        .set_targets("payment_confirmed", vec!["counters".to_owned()]);
    for role in ["capture", "handlers"] {
        let out = run_cli(&config, &["run", "--role", role]).await;
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(
            out.stderr.contains("routes.payment_confirmed")
                && out.stderr.contains("add \"kafka\" to the route"),
            "{role}: {}",
            out.stderr
        );
    }
    // The defaults route memory kinds to memory_stats, which runs with --role all only.
    let out = run_cli(
        &crate::common::app::config(&db_name),
        &["run", "--role", "handlers"],
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`memory_stats` cannot run with --role handlers"),
        "{}",
        out.stderr
    );
    let out = run_cli(&config, &["run", "--role", "both"]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("expected all, capture or handlers"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_record_that_is_no_payment_event_is_dead_lettered_and_the_handlers_go_on() {
    let db_name = unique_name("roles_bad");
    let db = mongo().await.database(&db_name);
    let config = split_config(&db_name);
    let mut capture = Process::spawn_with(&config, &["--role", "capture"]);
    capture.wait_healthy().await;
    let mut handlers = Process::spawn_with(&config, &["--role", "handlers"]);
    handlers.wait_healthy().await;
    // Something else writes to the payments topic: not a CloudEvent changeflow wrote.
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::common::kafka_brokers())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&topic).key("junk").payload("not an event"),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("the broker refused the record: {e}"));
    insert(&db, "after-junk", 60, true).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "after a bad record").await;
    let letter = wait_until(DEADLINE, "the bad record's dead letter", || async {
        db.collection::<Document>("changeflow_dead_letters")
            .find_one(doc! {"stage": "decode", "event_id": {"$regex": "^kafka:"}})
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(letter.get_str("event"), Ok("not an event"), "{letter}");
    assert!(
        letter
            .get_str("reason")
            .is_ok_and(|r| r.contains("attribute `id` missing")),
        "{letter}"
    );
    handlers.stop_cleanly().await;
    capture.stop_cleanly().await;
}

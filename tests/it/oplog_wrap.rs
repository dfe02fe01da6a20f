//! A real oplog wrap, on a server this test owns (990 MB oplog, the server's minimum).
//!
//! While the sink is down the checkpoint waits, and the headroom shrinks as other writes
//! push the oplog on: in `/metrics` and in `status`. Once the stored checkpoint has fallen
//! off the oplog, `run` stops with the ways out: found before resuming when the oplog can
//! be read, and by the server (ChangeStreamHistoryLost) for a user who cannot read
//! `local`. With `restart-from-now` the same user goes on and the gap is recorded.

use std::time::Duration;

use crate::common::app::{
    insert_pending, kafka_only_config, run_cli, start_ready, wait_settled_and_counted,
};
use crate::common::broker::OwnBroker;
use crate::common::own_mongod::{Options, OwnMongod, PASSWORD_IN_URI};
use crate::common::records::{consume_until, required};
use crate::common::{DEADLINE, oldest_oplog_entry, unique_name, wait_until};
use changeflow::config::{Config, HistoryLostPolicy};
use changeflow::source::position::{describe, token_time};
use changeflow::state::checkpoints::CheckpointStore;
use changeflow::state::gaps::Gaps;
use mongodb::bson::{Document, Timestamp, doc};
use mongodb::{Client, Collection};

/// A user with readWrite on the test database only: it cannot read `local.oplog.rs`.
const LIMITED_USER: &str = "limited";
const LIMITED_PASSWORD: &str = "limited-pw";

/// Writes big documents (inserted, then deleted: the oplog grows, the data does not).
struct Filler {
    collection: Collection<Document>,
    blob: String,
    next: i64,
}

impl Filler {
    const DOCUMENT_MB: usize = 8;

    fn new(client: &Client) -> Filler {
        Filler {
            collection: client.database("filler").collection("filler"),
            blob: "x".repeat(Self::DOCUMENT_MB << 20),
            next: 0,
        }
    }

    /// Adds about `mb` MB to the oplog.
    async fn write(&mut self, mb: usize) {
        for _ in 0..mb.div_ceil(Self::DOCUMENT_MB) {
            let id = self.next;
            self.next += 1;
            self.collection
                .insert_one(doc! {"_id": id, "blob": &self.blob})
                .await
                .expect("inserting filler");
            self.collection
                .delete_one(doc! {"_id": id})
                .await
                .expect("deleting filler");
        }
    }

    /// Writes 80 MB at a time until `done(oldest oplog entry)` holds; fails past `cap_mb`.
    async fn until(
        &mut self,
        client: &Client,
        cap_mb: usize,
        what: &str,
        done: impl Fn(Timestamp) -> bool,
    ) -> Timestamp {
        let mut written = 0;
        loop {
            self.write(80).await;
            written += 80;
            // Once over size, the server truncates after its next checkpoint (every second
            // here): waiting for it keeps the writes from overshooting.
            let waits = if oplog_over_size(client).await { 10 } else { 1 };
            for _ in 0..waits {
                let oldest = oldest_oplog_entry(client).await;
                if done(oldest) {
                    return oldest;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(written < cap_mb, "{what}: not reached after {written} MB");
        }
    }
}

async fn oplog_over_size(client: &Client) -> bool {
    let stats = client
        .database("local")
        .run_command(doc! {"collStats": "oplog.rs"})
        .await
        .expect("collStats of the oplog");
    let number = |key| {
        stats
            .get(key)
            .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
            .unwrap_or_else(|| panic!("oplog collStats without {key}: {stats}"))
    };
    number("size") >= number("maxSize")
}

fn gauge(metrics: &str, series: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

async fn stored_time(client: &Client, config: &Config) -> Timestamp {
    let checkpoint = CheckpointStore::new(&client.database(&config.checkpoint.database))
        .load(&config.watch[0].database)
        .await
        .expect("reading the checkpoint")
        .expect("a checkpoint");
    token_time(&checkpoint.token).expect("the token's time")
}

async fn status_headroom(config: &Config) -> serde_json::Value {
    let out = run_cli(config, &["status", "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    report["streams"][0].clone()
}

fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"))
}

#[tokio::test]
async fn headroom_shrinks_under_writes_and_a_real_wrap_is_reported() {
    let _faults = crate::common::exclusive().await;
    let server = OwnMongod::start_with(Options {
        oplog_mb: Some(990),
        ..Options::default()
    })
    .await;
    let root = server.client().await;
    let db_name = unique_name("wrap");
    server
        .create_user(
            LIMITED_USER,
            LIMITED_PASSWORD,
            vec![doc! {"role": "readWrite", "db": &db_name}],
        )
        .await;
    let mut broker = OwnBroker::start().await;
    let mut config = kafka_only_config(&db_name);
    config.mongodb.uri = server.uri_with(PASSWORD_IN_URI);
    config.kafka.brokers = broker.address();
    // Longer than the outage below: librdkafka keeps the record and retries it itself.
    config.kafka.delivery_timeout_ms = 120_000;
    config.history.check_every_ms = 200;
    // The limited user's rights cover the one database that holds everything.
    config.memory.database = db_name.clone();
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let payments = root.database(&db_name).collection::<Document>("payments");
    let mut filler = Filler::new(&root);

    // Oplog history spread over several seconds, so that truncating part of it moves the
    // oldest entry by whole seconds.
    let initiated = oldest_oplog_entry(&root).await;
    for _ in 0..6 {
        filler.write(80).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let running = start_ready(&config).await;
    insert_pending(&payments, "before", 1, 1).await;
    consume_until(&broker.address(), &topic, DEADLINE, Duration::ZERO, |_| {
        true
    })
    .await;

    // The sink goes away with an event pending: the checkpoint must wait before it.
    broker.stop();
    insert_pending(&payments, "during", 1, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting_at = stored_time(&root, &config).await;
    let series = format!("changeflow_oplog_headroom_seconds{{stream=\"{db_name}\"}}");
    let expected = i64::from(waiting_at.time) - i64::from(initiated.time);
    // The oplog is far from its limit: the headroom is projected from the limit and the
    // write rate, above the history kept so far.
    let first = wait_until(DEADLINE, "the headroom metric before the wrap", || async {
        gauge(&running.api.metrics.render(), &series).filter(|h| *h > expected)
    })
    .await;
    let stream = status_headroom(&config).await;
    assert_eq!(stream["headroom"]["basis"], "estimated", "{stream}");
    assert_eq!(
        stream["headroom"]["measured_seconds"].as_i64(),
        Some(expected),
        "{stream}"
    );
    assert!(
        expected >= 5,
        "the history spans the filler's seconds: {expected}"
    );

    let oldest = filler
        .until(
            &root,
            1500,
            "the oplog truncating part of the history",
            |o| o.time > initiated.time,
        )
        .await;
    assert!(
        oldest < waiting_at,
        "the pending event is still in the oplog"
    );
    assert_eq!(
        stored_time(&root, &config).await,
        waiting_at,
        "the checkpoint waited for the sink"
    );
    let shrunk = i64::from(waiting_at.time) - i64::from(oldest.time);
    assert!(shrunk < first, "headroom {shrunk} < {first}");
    wait_until(DEADLINE, "the headroom metric to shrink", || async {
        let now = gauge(&running.api.metrics.render(), &series)?;
        (now == shrunk).then_some(())
    })
    .await;
    // Wrapped, the oplog stays at its limit: the headroom is the measured one.
    let stream = status_headroom(&config).await;
    assert_eq!(
        stream["headroom_seconds"].as_i64(),
        Some(shrunk),
        "{stream}"
    );
    assert_eq!(stream["headroom"]["basis"], "measured", "{stream}");
    eprintln!(
        "headroom: {first} s estimated ({expected} s kept) before, {shrunk} s measured after \
         the oplog moved on"
    );

    // The sink comes back: nothing was lost, and the checkpoint moves on.
    broker.resume().await;
    let records = consume_until(
        &broker.address(),
        &topic,
        Duration::from_secs(120),
        Duration::from_secs(1),
        |r| required(r, "ce_subject").contains("during-0"),
    )
    .await;
    assert!(records.len() >= 2, "both payments delivered");
    wait_until(
        DEADLINE,
        "the checkpoint to pass the delivered event",
        || async { (stored_time(&root, &config).await > waiting_at).then_some(()) },
    )
    .await;
    running.until(async {}).await.expect("graceful stop");

    // Stopped, the checkpoint stays; the oplog moves past it.
    let checkpoint_at = stored_time(&root, &config).await;
    // The position as stored: each run stamps its lease term on the document too.
    let checkpoint_doc = || async {
        let mut doc = root
            .database(&db_name)
            .collection::<Document>("changeflow_checkpoints")
            .find_one(doc! {})
            .await
            .expect("reading the checkpoint");
        if let Some(doc) = doc.as_mut() {
            doc.remove("term");
        }
        doc
    };
    let before = checkpoint_doc().await;
    let oldest = filler
        .until(&root, 3000, "the oplog passing the checkpoint", |o| {
            o > checkpoint_at
        })
        .await;

    let mut limited = config.clone();
    limited.mongodb.uri = server.uri_for(LIMITED_USER, LIMITED_PASSWORD);
    let out = run_cli(&limited, &["run"]).await;
    assert_ne!(out.code, Some(0), "run must fail:\n{}", out.stderr);
    let error = error_line(&out.stderr);
    eprintln!("without access to the oplog: {error}");
    for part in [
        format!(
            "stream `{db_name}`: its checkpoint {}",
            describe(checkpoint_at)
        ),
        "no longer in the oplog".to_owned(),
        "the server: ".to_owned(),
        "286".to_owned(),
        format!("changeflow checkpoint reset --stream {db_name}"),
    ] {
        assert!(error.contains(&part), "`{part}` missing from: {error}");
    }

    // A right the user lacks: one tidy error line (no raw server reply) and the hint.
    let mut elsewhere = limited.clone();
    elsewhere.checkpoint.database = format!("{db_name}_other");
    let out = run_cli(&elsewhere, &["checkpoint", "show"]).await;
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    let error = error_line(&out.stderr);
    assert!(error.contains("(Unauthorized)"), "{error}");
    for noise in ["RawDocumentBuf", "server response", "$clusterTime", "lsid"] {
        assert!(!error.contains(noise), "`{noise}` in: {error}");
    }
    assert!(
        out.stderr.contains("README \"Privileges\""),
        "{}",
        out.stderr
    );

    let out = run_cli(&config, &["run"]).await;
    assert_ne!(out.code, Some(0), "run must fail:\n{}", out.stderr);
    let error = error_line(&out.stderr);
    for part in [
        describe(checkpoint_at),
        describe(oldest_oplog_entry(&root).await),
        "found before resuming".to_owned(),
    ] {
        assert!(error.contains(&part), "`{part}` missing from: {error}");
    }
    assert_eq!(checkpoint_doc().await, before, "nothing was skipped");
    let stream = status_headroom(&config).await;
    let headroom = stream["headroom_seconds"].as_i64().expect("headroom");
    assert!(headroom <= 0, "{stream}");
    assert!(
        stream.to_string().contains("history lost"),
        "status warns: {stream}"
    );
    eprintln!(
        "wrap: checkpoint {} behind the oldest entry {}",
        describe(checkpoint_at),
        describe(oldest)
    );

    // The user who cannot read the oplog, with resnapshot: the server's error leads to
    // the same gap record, and a snapshot of the stream repairs it. Payments written in
    // the gap (and the two earlier ones, published but never handled: Kafka was their
    // only route) reach the provider and the counters through it.
    insert_pending(&payments, "gap", 3, 2).await;
    limited
        .history
        .on_lost_streams
        .insert(db_name.clone(), HistoryLostPolicy::Resnapshot);
    limited.routes = changeflow::config::RoutesConfig::default();
    let running = start_ready(&limited).await;
    let gaps = Gaps::new(&root.database(&db_name));
    let recorded = gaps.of_stream(&db_name).await.expect("reading gaps");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].lost_from, Some(checkpoint_at));
    assert_eq!(
        recorded[0].oldest_available, None,
        "the oplog was not readable"
    );
    assert!(recorded[0].reason.contains("286"), "{:?}", recorded[0]);
    assert!(recorded[0].repair_started_at.is_some(), "{:?}", recorded[0]);
    insert_pending(&payments, "after", 1, 1).await;
    wait_settled_and_counted(
        &root.database(&db_name),
        Duration::from_secs(60),
        "after the repair",
    )
    .await;
    let repaired = wait_until(DEADLINE, "the gap to be marked repaired", || async {
        let gap = gaps.of_stream(&db_name).await.ok()?.pop()?;
        gap.repair_finished_at.map(|at| (gap, at))
    })
    .await;
    eprintln!(
        "repair: snapshot from {:?} to {:?}",
        repaired.0.repair_started_at, repaired.1
    );
    consume_until(&broker.address(), &topic, DEADLINE, Duration::ZERO, |r| {
        required(r, "ce_subject").contains("after-0")
    })
    .await;
    running.until(async {}).await.expect("graceful stop");
}

//! `changeflow replay` against a real replica set and broker: the events after a token or
//! between two times, with the live run's ids, and the live checkpoint left alone.

use std::collections::HashSet;

use crate::common::app::{insert_pending, kafka_only_config, run_cli, start_ready};
use crate::common::records::{consume, consume_until, required};
use crate::common::{DEADLINE, unique_name, within};
use changeflow::cmd::replay;
use changeflow::config::Config;
use changeflow::domain::EventId;
use changeflow::source::position::{cluster_time_text, describe};
use changeflow::source::{self, StartAt};
use futures::StreamExt;
use mongodb::bson::{Document, Timestamp, doc};

/// A change as the test's own stream saw it.
struct Seen {
    data: String,
    time: Timestamp,
}

impl Seen {
    fn id(&self) -> String {
        EventId::from_token_data(&self.data).to_string()
    }
}

/// Inserts `count` PENDING payments `{prefix}-N` while watching, and returns each change's
/// token `_data` and cluster time, in order.
async fn insert_watched(config: &Config, prefix: &str, count: usize) -> Vec<Seen> {
    let client = crate::common::mongo().await;
    let target = &config.watch[0];
    let mut stream = source::open(&client, target, &config.engine, &StartAt::Now)
        .await
        .expect("opening the test's own stream");
    let payments = client
        .database(&target.database)
        .collection::<Document>("payments");
    insert_pending(&payments, prefix, count, 1).await;
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let raw = within(DEADLINE, "a change on the test's stream", stream.next())
            .await
            .expect("stream ended")
            .expect("reading the test's stream");
        let data = raw
            .get_document("_id")
            .and_then(|t| t.get_str("_data"))
            .expect("change token")
            .to_owned();
        let time = raw.get_timestamp("clusterTime").expect("clusterTime");
        seen.push(Seen { data, time });
    }
    seen
}

#[tokio::test]
async fn replay_from_a_token_re_emits_exactly_the_later_events_with_the_live_ids() {
    let client = crate::common::mongo().await;
    let db_name = unique_name("replay_tok");
    let config = kafka_only_config(&db_name);
    let brokers = crate::common::kafka_brokers();
    let running = start_ready(&config).await;
    let seen = insert_watched(&config, "p", 1000).await;

    let live_topic = config.kafka.topic(&config.kafka.topics.payments);
    let live = consume(&brokers, &live_topic, 1000).await;
    let live_ids: HashSet<String> = live
        .iter()
        .map(|m| required(m, "ce_id").to_owned())
        .collect();
    let all_ids: HashSet<String> = seen.iter().map(Seen::id).collect();
    assert_eq!(
        live_ids, all_ids,
        "the live run's ids derive from the tokens"
    );
    running.until(async {}).await.expect("graceful stop");
    let checkpoints = client
        .database(&db_name)
        .collection::<Document>("changeflow_checkpoints");
    let live_checkpoint = checkpoints
        .find_one(doc! {"_id": &db_name})
        .await
        .expect("reading the checkpoint")
        .expect("live checkpoint stored");

    let middle = &seen[499];
    let topic = unique_name("replayed");
    let out = run_cli(
        &config,
        &[
            "replay",
            "--from-token",
            &middle.data,
            "--to",
            "kafka",
            "--topic",
            &topic,
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "replay failed:\n{}", out.stderr);
    assert!(out.stderr.contains("complete up to"), "{}", out.stderr);

    let replayed = consume_until(
        &brokers,
        &topic,
        DEADLINE * 2,
        std::time::Duration::from_secs(3),
        {
            let mut n = 0;
            move |_| {
                n += 1;
                n >= 500
            }
        },
    )
    .await;
    let replayed_ids: Vec<String> = replayed
        .iter()
        .map(|m| required(m, "ce_id").to_owned())
        .collect();
    let expected: HashSet<String> = seen[500..].iter().map(Seen::id).collect();
    assert_eq!(
        replayed_ids.len(),
        500,
        "exactly the 500 events after the token"
    );
    assert_eq!(
        replayed_ids.iter().cloned().collect::<HashSet<_>>(),
        expected,
        "the events after the token, with their live ids"
    );
    assert!(
        replayed
            .iter()
            .all(|m| required(m, "ce_type") == "changeflow.payment.requested.v1")
    );
    let after = checkpoints
        .find_one(doc! {"_id": &db_name})
        .await
        .expect("reading the checkpoint")
        .expect("live checkpoint still there");
    assert_eq!(
        after, live_checkpoint,
        "the replay did not move the live checkpoint"
    );
}

#[tokio::test]
async fn replay_between_two_times_stops_at_the_until_event() {
    let db_name = unique_name("replay_time");
    let config = kafka_only_config(&db_name);
    let seen = insert_watched(&config, "t", 30).await;
    let from = cluster_time_text(seen[9].time);
    let until = cluster_time_text(seen[19].time);
    let expected: Vec<String> = seen[9..=19].iter().map(Seen::id).collect();

    let window = ["replay", "--from-time", &from, "--until-time", &until];
    let out = run_cli(&config, &[&window[..], &["--to", "stdout"]].concat()).await;
    assert_eq!(out.code, Some(0), "replay failed:\n{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 11, "events 10..=20 only:\n{}", out.stdout);
    assert_eq!(
        ids.iter().cloned().collect::<HashSet<_>>(),
        expected.iter().cloned().collect::<HashSet<_>>()
    );
    let subjects: HashSet<&str> = events
        .iter()
        .map(|e| e["subject"].as_str().expect("subject"))
        .collect();
    assert!(subjects.contains("t-9") && subjects.contains("t-19"));
    assert!(!subjects.contains("t-8") && !subjects.contains("t-20"));

    let json_logs = ["--log-format", "json"];
    let dry = run_cli(
        &config,
        &[&json_logs[..], &window[..], &["--dry-run"]].concat(),
    )
    .await;
    assert_eq!(dry.code, Some(0), "dry run failed:\n{}", dry.stderr);
    // --log-format json: every log line is a JSON object; the summary lines are not logs.
    let logs: Vec<serde_json::Value> = dry
        .stderr
        .lines()
        .filter(|l| !l.starts_with("replay "))
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON log ({e}): {l:?} in:\n{}", dry.stderr))
        })
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "replay starting" && l["level"] == "INFO"),
        "{}",
        dry.stderr
    );
    assert!(dry.stdout.contains("dry run: 11 changes"), "{}", dry.stdout);
    assert!(
        dry.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("payment_requested") && l.ends_with(" 11")),
        "{}",
        dry.stdout
    );
}

#[tokio::test]
async fn replay_refuses_a_token_when_several_streams_are_watched() {
    let db_name = unique_name("replay_bad");
    let mut config = kafka_only_config(&db_name);
    config.watch.push(changeflow::config::WatchedDatabase {
        database: format!("{db_name}_2"),
        collections: vec!["other".into()],
    });
    let out = run_cli(
        &config,
        &[
            "replay",
            "--from-token",
            "8269206B7A000000012B022C0100296E5A1004",
        ],
    )
    .await;
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("choose it with --stream"),
        "{}",
        out.stderr
    );
    let bad_time = run_cli(&config, &["replay", "--from-time", "yesterday"]).await;
    assert_eq!(
        bad_time.code,
        Some(2),
        "clap usage error: {}",
        bad_time.stderr
    );
    assert!(bad_time.stderr.contains("RFC 3339"), "{}", bad_time.stderr);
}

#[tokio::test]
async fn an_interrupted_replay_continues_where_it_stopped_with_the_same_end() {
    let db_name = unique_name("replay_cont");
    let config = kafka_only_config(&db_name);
    let brokers = crate::common::kafka_brokers();
    let seen = insert_watched(&config, "c", 2000).await;
    let topic = unique_name("continued");
    let from = cluster_time_text(seen[0].time);
    let request = replay::Request {
        from: replay::From::Time(seen[0].time),
        until: None,
        stream: None,
        collections: Vec::new(),
        to: replay::Destination::Kafka {
            topic: Some(topic.clone()),
        },
        dry_run: false,
        handlers: false,
    };

    // Slowed down (small batches held for half a second), stopped after 100 records.
    let mut slow = config.clone();
    slow.kafka.linger_ms = 500;
    slow.engine.max_in_flight_events = 50;
    let first = replay::run(&slow, request, async {
        consume(&brokers, &topic, 100).await;
    })
    .await
    .expect("first run");
    assert!(!first.complete, "stopped before the end: {first:?}");
    assert!(!first.continued);
    assert!(first.events < 2000, "{first:?}");

    // Written after the replay began: beyond its end, so the continued run leaves them out.
    let payments = crate::common::mongo()
        .await
        .database(&db_name)
        .collection::<Document>("payments");
    insert_pending(&payments, "later", 50, 1).await;

    let out = run_cli(
        &config,
        &[
            "replay",
            "--from-time",
            &from,
            "--to",
            "kafka",
            "--topic",
            &topic,
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "second run failed:\n{}", out.stderr);
    assert!(
        out.stderr.contains("continuing an interrupted run"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "complete up to {}",
            describe(first.until.time().expect("an end time"))
        )),
        "the same end as the first run:\n{}",
        out.stderr
    );

    let records = consume_until(
        &brokers,
        &topic,
        DEADLINE * 2,
        std::time::Duration::from_secs(3),
        {
            let mut ids = HashSet::new();
            move |m| {
                ids.insert(required(m, "ce_id").to_owned());
                ids.len() >= 2000
            }
        },
    )
    .await;
    let ids: HashSet<String> = records
        .iter()
        .map(|m| required(m, "ce_id").to_owned())
        .collect();
    let expected: HashSet<String> = seen.iter().map(Seen::id).collect();
    assert_eq!(
        ids, expected,
        "every event of the window, none after its end"
    );
    let repeated = records.len() - ids.len();
    eprintln!(
        "interrupted replay: {} changes in the first run, {} records in all, {repeated} repeated",
        first.events,
        records.len()
    );
    assert_eq!(
        repeated, 0,
        "a graceful stop stores the position of everything it sent"
    );
}

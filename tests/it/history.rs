//! Lost history and headroom against a real replica set: a checkpoint older than the
//! oldest oplog entry stops `run` with the ways out (policy `fail`) or is skipped with a
//! recorded gap (`restart-from-now`); `status`, `/metrics` and `/healthz` report headroom.

use crate::common::app::{insert_pending, kafka_only_config, run_cli, start_ready};
use crate::common::records::consume;
use crate::common::{DEADLINE, oldest_oplog_entry, unique_name, wait_until};
use changeflow::config::{Config, HistoryLostPolicy};
use changeflow::source::position::{cluster_time_text, describe, token_from_hex, token_time};
use changeflow::state::checkpoints::{Checkpoint, CheckpointStore};
use changeflow::state::gaps::Gaps;
use mongodb::Client;
use mongodb::bson::{Document, Timestamp, doc};

/// Stores a live checkpoint for `config`'s stream whose token dates from an hour before
/// the oldest oplog entry (what a stream stopped for too long comes back to); returns its
/// time.
async fn store_lost_checkpoint(client: &Client, config: &Config) -> Timestamp {
    let oldest = oldest_oplog_entry(client).await;
    let lost = Timestamp {
        time: oldest.time - 3600,
        increment: 1,
    };
    let hex = format!(
        "82{:08X}{:08X}2B022C0100296E5A1004",
        lost.time, lost.increment
    );
    let token = token_from_hex(&hex).expect("a well-formed token");
    assert_eq!(token_time(&token), Some(lost));
    let store = CheckpointStore::new(&client.database(&config.checkpoint.database));
    store
        .save(&Checkpoint {
            stream: config.watch[0].database.clone(),
            token,
            cluster_time: Some(lost),
            wall_time: None,
            events_since_start: 0,
        })
        .await
        .expect("storing the checkpoint");
    lost
}

#[tokio::test]
async fn fail_policy_stops_with_both_times_and_the_ways_out() {
    let client = crate::common::mongo().await;
    let db_name = unique_name("lost_fail");
    let config = kafka_only_config(&db_name);
    let lost = store_lost_checkpoint(&client, &config).await;
    let oldest = oldest_oplog_entry(&client).await;
    let before = client
        .database(&db_name)
        .collection::<Document>("changeflow_checkpoints")
        .find_one(doc! {})
        .await
        .expect("reading the checkpoint");

    let out = run_cli(&config, &["run"]).await;
    assert_ne!(out.code, Some(0), "run must fail:\n{}", out.stderr);
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{}", out.stderr));
    for part in [
        format!("stream `{db_name}`"),
        describe(lost),
        describe(oldest),
        format!(
            "changeflow checkpoint set --stream {db_name} --time {}",
            cluster_time_text(oldest)
        ),
        format!("changeflow checkpoint reset --stream {db_name}"),
        format!("history.on_lost_streams.{db_name} = \"restart-from-now\""),
    ] {
        assert!(error.contains(&part), "`{part}` missing from: {error}");
    }
    assert!(
        out.stderr.lines().any(|l| l.starts_with("hint: ")),
        "{}",
        out.stderr
    );
    let mut after = client
        .database(&db_name)
        .collection::<Document>("changeflow_checkpoints")
        .find_one(doc! {})
        .await
        .expect("reading the checkpoint");
    // The run took the stream's lease and stamped its term; the position is what counts.
    if let Some(after) = after.as_mut() {
        after.remove("term");
    }
    assert_eq!(after, before, "nothing was skipped: the checkpoint stayed");
    let gaps = Gaps::new(&client.database(&db_name)).count(&db_name).await;
    assert_eq!(gaps.expect("counting gaps"), 0);
}

#[tokio::test]
async fn restart_from_now_records_the_gap_and_goes_on() {
    let client = crate::common::mongo().await;
    let db_name = unique_name("lost_restart");
    let mut config = kafka_only_config(&db_name);
    config
        .history
        .on_lost_streams
        .insert(db_name.clone(), HistoryLostPolicy::RestartFromNow);
    let lost = store_lost_checkpoint(&client, &config).await;
    let oldest = oldest_oplog_entry(&client).await;

    let running = start_ready(&config).await;
    let gaps = Gaps::new(&client.database(&db_name))
        .of_stream(&db_name)
        .await
        .expect("reading gaps");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert_eq!(gap.lost_from, Some(lost));
    assert_eq!(gap.oldest_available, Some(oldest));
    let lost_to = gap.lost_to.expect("where the stream went on");
    assert!(lost_to >= oldest, "{gap:?}");
    assert!(
        running
            .api
            .metrics
            .render()
            .contains(&format!("changeflow_gaps_total{{stream=\"{db_name}\"}} 1")),
        "gap metric"
    );

    let payments = client.database(&db_name).collection::<Document>("payments");
    insert_pending(&payments, "after-gap", 1, 1).await;
    let records = consume(
        &crate::common::kafka_brokers(),
        &config.kafka.topic(&config.kafka.topics.payments),
        1,
    )
    .await;
    assert_eq!(records.len(), 1, "events after the gap are handled");
    running.until(async {}).await.expect("graceful stop");
    let checkpoint = CheckpointStore::new(&client.database(&db_name))
        .load(&db_name)
        .await
        .expect("reading the checkpoint")
        .expect("checkpoint");
    assert!(token_time(&checkpoint.token).expect("token time") >= lost_to);
}

#[tokio::test]
async fn status_metrics_and_healthz_report_the_headroom() {
    let client = crate::common::mongo().await;
    let db_name = unique_name("headroom");
    let mut config = kafka_only_config(&db_name);
    config.history.check_every_ms = 200;
    // Longer than any estimate (they stop at ten years): the warning must show.
    config.history.headroom_warning_seconds = 20 * 365 * 86_400;
    let running = start_ready(&config).await;
    let payments = client.database(&db_name).collection::<Document>("payments");
    insert_pending(&payments, "h", 3, 1).await;
    let series = format!("changeflow_oplog_headroom_seconds{{stream=\"{db_name}\"}}");
    let headroom = wait_until(DEADLINE, "the headroom metric", || async {
        let text = running.api.metrics.render();
        text.lines()
            .find(|l| l.starts_with(&series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    })
    .await;
    let oldest = oldest_oplog_entry(&client).await;
    let now = mongodb::bson::DateTime::now().timestamp_millis() / 1000;
    let window = (now - i64::from(oldest.time)) as f64;
    assert!(
        headroom >= window - 5.0,
        "headroom {headroom} at least the history kept so far ({window} s)"
    );
    assert!(
        running.api.metrics.render().contains(&format!(
            "changeflow_checkpoint_lag_seconds{{stream=\"{db_name}\"}}"
        )),
        "lag metric"
    );
    let health: serde_json::Value =
        reqwest::get(format!("http://{}/healthz", running.http_address))
            .await
            .expect("GET /healthz")
            .json()
            .await
            .expect("JSON body");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["warnings"][&db_name]
            .as_str()
            .is_some_and(|w| w.contains("headroom")),
        "{health}"
    );
    running.until(async {}).await.expect("graceful stop");

    let out = run_cli(&config, &["status", "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    let stream = &report["streams"][0];
    assert_eq!(stream["stream"], db_name.as_str());
    let checkpoint = CheckpointStore::new(&client.database(&db_name))
        .load(&db_name)
        .await
        .expect("reading the checkpoint")
        .expect("checkpoint");
    let checkpoint_time = token_time(&checkpoint.token).expect("token time");
    let oldest = oldest_oplog_entry(&client).await;
    let measured = i64::from(checkpoint_time.time) - i64::from(oldest.time);
    assert_eq!(
        stream["headroom"]["measured_seconds"].as_i64(),
        Some(measured),
        "{report}"
    );
    // The shared server's oplog is far from its size limit: the headroom is projected from
    // the limit and the write rate, never below the history already kept.
    let member = &report["oplog"][0];
    let (size, max) = (
        member["size_bytes"].as_u64().expect("oplog size"),
        member["max_bytes"].as_u64().expect("oplog limit"),
    );
    assert!(size < max, "{report}");
    assert_eq!(stream["headroom"]["basis"], "estimated", "{report}");
    let estimated = stream["headroom_seconds"].as_i64().expect("headroom");
    assert_eq!(stream["headroom"]["seconds"].as_i64(), Some(estimated));
    assert!(estimated > measured, "{report}");
    assert_eq!(
        stream["checkpoint"]["time"]["cluster_time"],
        cluster_time_text(checkpoint_time).as_str()
    );
    assert!(
        report["oplog"][0]["oldest"]["cluster_time"].is_string(),
        "{report}"
    );
    let text = run_cli(&config, &["status"]).await;
    assert!(text.stdout.contains("headroom"), "{}", text.stdout);
    assert!(text.stdout.contains("WARNING"), "{}", text.stdout);
}

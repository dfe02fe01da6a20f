//! `changeflow checkpoint set | reset` against a real replica set and broker: they refuse
//! while a `run` processes the stream (it would overwrite them), move the position when it
//! is stopped (a set time replays from there, with the same ids), print how to undo, and
//! `status` shows which run holds each stream.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::app::{Process, kafka_only_config, payment, run_cli, set_time_args};
use crate::common::records::{consume_until, required};
use crate::common::{DEADLINE, unique_name, wait_until};
use changeflow::source::position::cluster_time_text;
use mongodb::bson::{Document, Timestamp};

const HANDLED: &str = "changeflow_events_handled_total{kind=\"payment_requested\"}";

/// Inserts PENDING payments `{prefix}-0..count`; returns each insert's cluster time.
async fn insert_timed(
    client: &mongodb::Client,
    db_name: &str,
    prefix: &str,
    count: usize,
) -> Vec<Timestamp> {
    let payments = client.database(db_name).collection::<Document>("payments");
    let mut session = client.start_session().await.expect("session");
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        payments
            .insert_one(payment(&format!("{prefix}-{i}"), 1, "PENDING"))
            .session(&mut session)
            .await
            .expect("insert");
        times.push(session.operation_time().expect("operation time"));
    }
    times
}

/// A `run` that has handled 5 PENDING payments `{prefix}-0..5`; their cluster times.
async fn running_with_five(
    client: &mongodb::Client,
    config: &changeflow::config::Config,
    prefix: &str,
) -> (Process, Vec<Timestamp>) {
    let mut process = Process::spawn(config);
    process.wait_healthy().await;
    let database = &config.watch[0].database;
    let times = insert_timed(client, database, prefix, 5).await;
    wait_until(DEADLINE, "5 payments handled", || async {
        (process.metric(HANDLED).await >= 5.0).then_some(())
    })
    .await;
    (process, times)
}

/// The topic's first `n` records (more, if more come before it is quiet for 2 s).
async fn first_records(topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let mut seen = 0;
    consume_until(
        &crate::common::kafka_brokers(),
        topic,
        DEADLINE,
        Duration::from_secs(2),
        move |_| {
            seen += 1;
            seen >= n
        },
    )
    .await
}

/// The payments that have more than one record, sorted; each one's copies carry one id.
fn repeated_subjects(records: &[rdkafka::message::OwnedMessage]) -> Vec<String> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for r in records {
        seen.entry(required(r, "ce_subject").to_owned())
            .or_default()
            .push(required(r, "ce_id").to_owned());
    }
    let mut repeated: Vec<String> = seen
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(subject, ids)| {
            assert!(ids.iter().all(|id| *id == ids[0]), "{subject}: {ids:?}");
            subject
        })
        .collect();
    repeated.sort_unstable();
    repeated
}

/// The term of `stream`'s lease and the pid holding it.
async fn lease(client: &mongodb::Client, stream: &str) -> Option<(i64, i64)> {
    let lease = client
        .database(stream)
        .collection::<Document>("changeflow_leases")
        .find_one(mongodb::bson::doc! {"_id": stream})
        .await
        .ok()??;
    let pid = lease.get_document("owner").ok()?.get_i64("pid").ok()?;
    Some((lease.get_i64("term").ok()?, pid))
}

async fn stream_json(config: &changeflow::config::Config, args: &[&str]) -> serde_json::Value {
    let out = run_cli(config, args).await;
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} JSON ({e}): {}", out.stdout))
}

#[tokio::test]
async fn set_and_reset_refuse_while_running_and_move_the_position_when_stopped() {
    let client = crate::common::mongo().await;
    let db_name = unique_name("ckpt_admin");
    let mut config = kafka_only_config(&db_name);
    // Long enough that the killed run's lease is surely live when `reset` runs.
    config.lease.ttl_ms = 30_000;
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let stream = db_name.as_str();

    let (mut process, times) = running_with_five(&client, &config, "c").await;
    let status = stream_json(&config, &["status", "--json"]).await;
    assert_eq!(
        status["streams"][0]["run"]["pid"].as_u64(),
        Some(u64::from(process.pid())),
        "status names the running process: {status}"
    );
    let text = run_cli(&config, &["status"]).await;
    assert!(
        text.stdout
            .contains(&format!("changeflow run pid {}", process.pid())),
        "{}",
        text.stdout
    );

    let before = stream_json(&config, &["checkpoint", "show", "--json"]).await;
    let at = cluster_time_text(times[2]);
    let set_to_at = [&set_time_args(stream, &at)[..], &["--yes"]].concat();
    let reset = ["checkpoint", "reset", "--stream", stream, "--yes"];
    for args in [&reset[..], &set_to_at[..]] {
        let out = run_cli(&config, args).await;
        assert_ne!(
            out.code,
            Some(0),
            "{args:?} must be refused:\n{}",
            out.stdout
        );
        assert!(
            out.stderr.contains(&format!(
                "is being processed by changeflow run pid {}",
                process.pid()
            )) && out.stderr.contains("--force")
                && out
                    .stderr
                    .contains("hint: `changeflow status` shows which run holds"),
            "{args:?}: {}",
            out.stderr
        );
    }
    process.stop_cleanly().await;
    let status = stream_json(&config, &["status", "--json"]).await;
    assert!(
        status["streams"][0]["run"].is_null(),
        "a graceful stop releases the stream: {status}"
    );
    let stopped = stream_json(&config, &["checkpoint", "show", "--json"]).await;
    let token = stopped[0]["token"].as_str().expect("a token").to_owned();
    assert_ne!(before[0]["token"], serde_json::Value::Null);

    // Stopped: the set goes through, names how to undo it, and the next run replays from
    // the set time (payments 2, 3, 4 again, with their ids).
    let out = run_cli(&config, &set_to_at).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "to undo: changeflow checkpoint set --stream {stream} --token {token} --yes"
        )),
        "{}",
        out.stdout
    );
    let moved = stream_json(&config, &["checkpoint", "show", "--json"]).await;
    assert_eq!(moved[0]["cluster_time"], at.as_str(), "{moved}");
    assert_eq!(moved[0]["start_at_time"], true, "{moved}");

    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let records = first_records(&topic, 8).await;
    let repeated = repeated_subjects(&records);
    assert_eq!(records.len(), 8, "5 first, then 3 from the set time");
    assert_eq!(
        repeated,
        ["c-2", "c-3", "c-4"],
        "replayed from the set time"
    );

    // A second run on the same stream stands by (the first holds the lease); when it
    // stops, the first still holds the stream.
    let mut second = Process::spawn(&config);
    second.wait_healthy().await;
    wait_until(DEADLINE, "the second run to stand by", || async {
        second.log().contains("standing by").then_some(())
    })
    .await;
    second.stop_cleanly().await;
    let out = run_cli(&config, &reset).await;
    assert!(
        out.stderr.contains(&format!(
            "is being processed by changeflow run pid {}",
            process.pid()
        )),
        "the first run still holds the stream: {}",
        out.stderr
    );

    // A killed run's lease stays live until its TTL: refused, unless forced.
    process.signal(libc::SIGKILL);
    process.wait_exit(DEADLINE).await;
    let out = run_cli(&config, &reset).await;
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains("is being processed by"),
        "{}",
        out.stderr
    );
    let out = run_cli(
        &config,
        &["checkpoint", "reset", "--stream", stream, "--force"],
    )
    .await;
    assert_ne!(
        out.code,
        Some(0),
        "no --yes and no terminal:\n{}",
        out.stdout
    );
    assert!(out.stderr.contains("pass --yes"), "{}", out.stderr);
    let out = run_cli(&config, &[&reset[..], &["--force"]].concat()).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: --force while"),
        "{}",
        out.stderr
    );
    let reset = stream_json(&config, &["checkpoint", "show", "--json"]).await;
    assert!(
        reset[0]["token"].is_null() && reset[0]["cluster_time"].is_null(),
        "{reset}"
    );
}

#[tokio::test]
async fn a_forced_set_moves_a_running_holder_to_the_new_position() {
    let client = crate::common::mongo().await;
    let db_name = unique_name("ckpt_force");
    let config = kafka_only_config(&db_name);
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let stream = db_name.as_str();
    let (mut process, times) = running_with_five(&client, &config, "f").await;
    let (term, _) = lease(&client, stream).await.expect("a lease");

    let at = cluster_time_text(times[2]);
    let set = [&set_time_args(stream, &at)[..], &["--force", "--yes"]].concat();
    let out = run_cli(&config, &set).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: --force while"),
        "{}",
        out.stderr
    );
    // The holder loses the stream at its next renewal, takes it again above the fence and
    // reads from the set time: payments 2, 3, 4 again, with their ids; the process goes on.
    let records = first_records(&topic, 8).await;
    assert_eq!(records.len(), 8, "5 first, then 3 from the set time");
    assert_eq!(repeated_subjects(&records), ["f-2", "f-3", "f-4"]);
    let (now, pid) = lease(&client, stream).await.expect("a lease");
    assert!(
        now > term + 1,
        "fenced, then taken above the fence: {term} -> {now}"
    );
    assert_eq!(pid, i64::from(process.pid()), "the same process holds it");
    assert!(process.is_running(), "{}", process.log());
    process.stop_cleanly().await;
}

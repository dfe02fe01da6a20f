//! A new user's first minutes, on a replica set created for the test: `changeflow demo` and
//! a `run` stopped with SIGTERM log no WARN line. A young oplog far from its size limit is
//! not low on headroom, and closing the client at the stop is not a lost primary.

use std::process::Stdio;
use std::time::Duration;

use changeflow::config::Config;
use mongodb::bson::Document;

use crate::common::app::{Process, insert_pending, wait_settled_and_counted};
use crate::common::own_mongod::{Options, OwnMongod, PASSWORD_IN_URI};
use crate::common::{DEADLINE, kafka_brokers, unique_name};

/// The built-in defaults, as a new user runs them, against `server` and the shared broker
/// (topics of the test's own).
fn defaults_against(server: &OwnMongod, name: &str) -> Config {
    let mut config = Config::default();
    config.mongodb.uri = server.uri_with(PASSWORD_IN_URI);
    config.kafka.brokers = kafka_brokers();
    config.kafka.topic_prefix = format!("{name}.");
    config.http.address = "127.0.0.1:0".to_owned();
    config
}

/// The lines of `log` at WARN or ERROR level.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.split_whitespace()
                .take(3)
                .any(|w| w == "WARN" || w == "ERROR")
        })
        .collect()
}

#[test]
fn warning_lines_are_told_apart_from_others() {
    let log = "2026-12-04T23:59:01.1Z  INFO changeflow: ready\n\
               2026-12-04T23:59:02.1Z  WARN changeflow::cmd::run: headroom low\n\
               created 100 PENDING payments; no WARN here";
    assert_eq!(
        warnings(log),
        vec!["2026-12-04T23:59:02.1Z  WARN changeflow::cmd::run: headroom low"]
    );
}

#[tokio::test]
async fn a_clean_demo_on_a_new_set_logs_no_warning() {
    let server = OwnMongod::start_with(Options {
        fast_ttl: true,
        ..Options::default()
    })
    .await;
    let config = defaults_against(&server, &unique_name("firstdemo"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("changeflow.toml");
    std::fs::write(&file, toml::to_string(&config).expect("config to TOML")).expect("config");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_changeflow"))
        .arg("--config")
        .arg(&file)
        .args(["demo", "--payments", "30", "--memory-users", "2"])
        .env_remove("CHANGEFLOW_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the demo ends within 240 s")
        .expect("running changeflow demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("payment_counters"), "{stdout}");
    assert!(stdout.contains("memory_stats (this run)"), "{stdout}");
    let found = warnings(&stderr);
    assert!(found.is_empty(), "the demo warned:\n{}", found.join("\n"));
}

#[tokio::test]
async fn a_clean_run_stopped_with_sigterm_logs_no_warning() {
    let server = OwnMongod::start().await;
    let mut config = defaults_against(&server, &unique_name("firstrun"));
    config.provider.latency_ms = 0;
    // Measured at once and again before the stop.
    config.history.check_every_ms = 500;
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let db = server.client().await.database(&config.payments.database);
    insert_pending(&db.collection::<Document>("payments"), "first", 20, 0).await;
    wait_settled_and_counted(&db, DEADLINE, "the first payments").await;
    // The headroom was measured, and on this minutes-old set it is projected from the
    // oplog's size limit: far above the 6 h warning, though the oplog holds only minutes.
    let series = format!(
        "changeflow_oplog_headroom_seconds{{stream=\"{}\"}}",
        config.payments.database
    );
    crate::common::wait_until(DEADLINE, "the headroom metric", || async {
        (process.metric(&series).await > 0.0).then_some(())
    })
    .await;
    let headroom = process.metric(&series).await;
    assert!(
        headroom > config.history.headroom_warning_seconds as f64,
        "headroom {headroom} s on a new set"
    );
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(DEADLINE).await;
    let log = process.log();
    assert!(status.success(), "exit {status}:\n{log}");
    let found = warnings(&log);
    assert!(found.is_empty(), "the run warned:\n{}", found.join("\n"));
}

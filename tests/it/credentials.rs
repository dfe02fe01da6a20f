//! With a password in the connection string (mongod running with access control), no
//! command prints it: not `run`'s logs, not `status`, `checkpoint`, `replay`, nor errors.

use crate::common::app::{Process, insert_pending, kafka_only_config, run_cli};
use crate::common::own_mongod::{OwnMongod, PASSWORD, PASSWORD_IN_URI};
use crate::common::{DEADLINE, unique_name};
use mongodb::bson::Document;

fn assert_no_password(what: &str, text: &str) {
    for secret in [PASSWORD, PASSWORD_IN_URI, "s3cr3t"] {
        assert!(!text.contains(secret), "{what} shows the password:\n{text}");
    }
}

#[tokio::test]
async fn passwords_never_appear_in_any_output() {
    let server = OwnMongod::start().await;
    let uri = server.uri_with(PASSWORD_IN_URI);
    let db_name = unique_name("creds");
    let mut config = kafka_only_config(&db_name);
    config.mongodb.uri = uri.clone();

    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
    let payments = client.database(&db_name).collection::<Document>("payments");
    insert_pending(&payments, "c", 3, 1).await;
    crate::common::wait_until(DEADLINE, "the checkpoint to pass the payments", || async {
        let events = process
            .metric("changeflow_events_handled_total{kind=\"payment_requested\"}")
            .await;
        (events >= 3.0).then_some(())
    })
    .await;
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(DEADLINE).await;
    assert!(status.success(), "{}", process.log());
    assert_no_password("run's log", &process.log());

    let mut outputs = Vec::new();
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["checkpoint", "show"],
        vec!["check-config"],
        vec!["replay", "--from-time", "1.0", "--dry-run"],
    ] {
        let out = run_cli(&config, &args).await;
        outputs.push((args, out));
    }
    let (_, status) = &outputs[0];
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(status.stdout.contains("headroom"), "{}", status.stdout);
    // A replay from before the set's initiation: the oldest time is named, no password.
    let (_, replay) = &outputs[4];
    assert_ne!(replay.code, Some(0));
    assert!(
        replay.stderr.contains("oldest time still available"),
        "{}",
        replay.stderr
    );

    let mut wrong = config.clone();
    wrong.mongodb.uri = server.uri_with("n0t-the-s3cr3t-Pa55");
    let refused = run_cli(&wrong, &["status"]).await;
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("app:***@"), "{}", refused.stderr);
    assert!(refused.stderr.contains("hint: "), "{}", refused.stderr);
    assert!(!refused.stderr.contains("n0t-the"), "{}", refused.stderr);
    outputs.push((vec!["status (wrong password)"], refused));
    for (args, out) in &outputs {
        assert_no_password(&format!("{args:?} stdout"), &out.stdout);
        assert_no_password(&format!("{args:?} stderr"), &out.stderr);
    }
}

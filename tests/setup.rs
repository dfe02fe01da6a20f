//! `changeflow setup` against the replica set: creates the validated payments collection,
//! is idempotent, and the validator refuses what the decoder would dead-letter.

mod common;

use std::process::Command;

use changeflow::setup::{self, Step};
use common::app::{config, payment};
use common::{mongo, unique_name};
use mongodb::bson::{Document, doc};

#[tokio::test]
async fn setup_creates_then_changes_nothing_and_the_validator_guards_payments() {
    let db_name = unique_name("setup");
    let client = mongo().await;
    let config = config(&db_name);

    assert_eq!(
        setup::run(&client, &config).await.unwrap(),
        Step::Created("payments".into())
    );
    assert_eq!(
        setup::run(&client, &config).await.unwrap(),
        Step::Unchanged("payments".into()),
        "a second run changes nothing"
    );

    let payments = client.database(&db_name).collection::<Document>("payments");
    payments
        .insert_one(payment("good", 0, "PENDING"))
        .await
        .expect("a valid payment is accepted");
    let mut no_code = payment("no-code", 0, "PENDING");
    no_code.insert("product", doc! {"name": "Nameless"});
    let mut odd_status = payment("odd-status", 0, "PENDING");
    odd_status.insert("status", "MAYBE");
    let mut text_amount = payment("text-amount", 0, "PENDING");
    text_amount.insert("amount", "twelve");
    for bad in [no_code, odd_status, text_amount] {
        let id = bad.get_str("_id").unwrap().to_owned();
        let error = payments
            .insert_one(bad)
            .await
            .expect_err("the validator refuses it");
        assert!(
            error.to_string().contains("Document failed validation"),
            "{id}: {error}"
        );
    }

    // A collection created without the validator gets it.
    let other = unique_name("setup");
    let other_config = common::app::config(&other);
    client
        .database(&other)
        .create_collection("payments")
        .await
        .unwrap();
    assert_eq!(
        setup::run(&client, &other_config).await.unwrap(),
        Step::ValidatorUpdated("payments".into())
    );
}

#[tokio::test]
async fn the_setup_command_says_what_it_did() {
    let db_name = unique_name("setupcli");
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_changeflow"))
            .arg("setup")
            .env("CHANGEFLOW_MONGODB_URI", common::mongodb_uri())
            .env(
                "CHANGEFLOW_WATCH",
                format!("[{{database = \"{db_name}\", collections = [\"payments\"]}}]"),
            )
            .env("CHANGEFLOW_PAYMENTS_DATABASE", &db_name)
            .env_remove("CHANGEFLOW_CONFIG")
            .output()
            .expect("running changeflow setup");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(run().contains("created"), "first run creates");
    assert!(
        run().contains("already has the validator"),
        "second run changes nothing"
    );
}

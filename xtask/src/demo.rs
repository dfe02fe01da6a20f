//! `cargo xtask demo`: services up, `changeflow tail` watching them, and a writer that
//! creates sample payments and settles them so the change events show on the terminal.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mongodb::Client;
use mongodb::bson::{Bson, DateTime, Decimal128, Document, Uuid, doc};
use tokio::signal::unix::{SignalKind, signal};

use crate::checks::workspace_root;
use crate::services::{self, UpOptions};

const PRODUCTS: [(&str, &str); 3] = [
    ("Espresso beans 1kg", "24.90"),
    ("Pour-over kettle", "59.00"),
    ("Paper filters x100", "6.50"),
];

pub async fn run() -> Result<ExitCode> {
    let endpoints = services::up(UpOptions::default()).await?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = std::process::Command::new(&cargo)
        .args(["build", "--locked", "--bin", "changeflow"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    if !built.success() {
        bail!("building changeflow failed (see above)");
    }
    let mut tail = tokio::process::Command::new(&cargo)
        .args([
            "run",
            "--quiet",
            "--locked",
            "--bin",
            "changeflow",
            "--",
            "tail",
        ])
        .current_dir(workspace_root())
        .env("CHANGEFLOW_MONGODB_URI", &endpoints.mongodb_uri)
        .env("CHANGEFLOW_KAFKA_BROKERS", &endpoints.kafka_brokers)
        .kill_on_drop(true)
        .spawn()
        .context("starting changeflow tail")?;

    let client = Client::with_uri_str(&endpoints.mongodb_uri).await?;
    let payments = client
        .database("changeflow")
        .collection::<Document>("payments");
    eprintln!(
        "demo: a payment every 2 s, settled 1 s later (first FAILED, then alternating); \
         Ctrl-C stops. Services keep running: `cargo xtask down` stops them."
    );
    // Created once so a signal that arrives while a payment is being written still counts.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut n: usize = 0;
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            status = tail.wait() => bail!("changeflow tail exited ({})", status?),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                let (name, unit_price) = PRODUCTS[n % PRODUCTS.len()];
                let quantity = (n % 3 + 1) as u32;
                let payment = sample_payment(name, unit_price, quantity)?;
                let id = payment.get("_id").cloned().unwrap_or(Bson::Null);
                payments.insert_one(payment).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let outcome = if n.is_multiple_of(2) { "FAILED" } else { "CONFIRMED" };
                payments
                    .update_one(
                        doc! {"_id": id, "status": "PENDING"},
                        doc! {"$set": {"status": outcome, "updated_at": DateTime::now()}},
                    )
                    .await?;
                n += 1;
            }
        }
    }
    let _ = tail.kill().await;
    Ok(ExitCode::SUCCESS)
}

/// A PENDING payment shaped as in the design: amount = unit price × quantity, as Decimal128.
fn sample_payment(product: &str, unit_price: &str, quantity: u32) -> Result<Document> {
    let cents: u64 = unit_price.replace('.', "").parse()?;
    let total = cents * u64::from(quantity);
    let amount = Decimal128::from_str(&format!("{}.{:02}", total / 100, total % 100))
        .map_err(|e| anyhow::anyhow!("building the amount: {e}"))?;
    Ok(doc! {
        "_id": Uuid::new().to_string(),
        "amount": amount,
        "status": "PENDING",
        "product": {"code": Uuid::new().to_string(), "name": product},
        "created_at": DateTime::now(),
    })
}

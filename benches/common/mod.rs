//! What the benchmark programs share: the servers under test and numeric settings from the
//! environment.

use anyhow::Context;
use mongodb::Client;
use mongodb::bson::doc;

/// A whole-number setting from the environment variable `name`, or `default`.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}=`{v}` is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// Kafka bootstrap brokers: `KAFKA_BROKERS`, else the local broker of `cargo xtask up`.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A client of `MONGODB_URI` (else the local replica set), checked to answer.
pub async fn mongo() -> anyhow::Result<Client> {
    let uri = std::env::var("MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?replicaSet=rs0".to_owned());
    let client = Client::with_uri_str(&uri).await?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .with_context(|| format!("no MongoDB at {uri}; start it with `cargo xtask up`"))?;
    Ok(client)
}

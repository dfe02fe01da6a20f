//! Everything events can be routed to, each a [`Target`]: the in-process handlers
//! (provider simulator, status updater, exactly-once counters and memory statistics),
//! Kafka and stdout; and [`build`], which makes the ones a configuration routes to.

mod batch;
pub mod counters;
pub mod exactly_once;
pub mod kafka;
pub mod memory_stats;
pub mod provider_simulator;
pub mod status_updater;
pub mod stdout;
pub mod write_errors;

use std::sync::Arc;
use std::time::Duration;

use mongodb::Client;

use crate::config::routes::{BuiltIn, KAFKA};
use crate::config::{Config, ConfigError};
use crate::domain::EventKind;
use crate::pipeline::target::{Target, TargetError};
use counters::Counters;
use kafka::{KafkaSink, PublishError};
use memory_stats::MemoryStats;
use provider_simulator::ProviderSimulator;
use status_updater::StatusUpdater;

/// Every built-in target and the kinds it can take, for validating `[routes]`.
pub fn built_in() -> Vec<BuiltIn> {
    let entry = |name, kinds: &[EventKind]| BuiltIn {
        name,
        kinds: kinds.iter().map(|k| k.as_str()).collect(),
    };
    vec![
        entry(provider_simulator::NAME, provider_simulator::KINDS),
        entry(counters::NAME, counters::KINDS),
        entry(memory_stats::NAME, memory_stats::KINDS),
        entry(KAFKA, &EventKind::ALL),
    ]
}

/// Why the targets of a configuration could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `[routes]` names a target that does not exist or cannot take a kind.
    #[error(transparent)]
    Routes(#[from] ConfigError),
    /// The counters' indexes could not be created.
    #[error(transparent)]
    Indexes(#[from] TargetError),
    /// The Kafka target could not start.
    #[error(transparent)]
    Kafka(#[from] PublishError),
}

/// The targets `config` routes to: provider simulator (which settles through the status
/// updater), counters and memory stats (creating their indexes) and the Kafka sink
/// (creating its topics), which also takes the raw collections and namespace events.
pub async fn build(client: &Client, config: &Config) -> Result<Vec<Arc<dyn Target>>, BuildError> {
    config.check_routes(&built_in(), "configuration")?;
    let routes = &config.routes;
    let mut targets: Vec<Arc<dyn Target>> = Vec::new();
    if routes.uses(provider_simulator::NAME) {
        let payments = &config.payments;
        let db = client.database(&payments.database);
        let updater = StatusUpdater::new(&db, &payments.collection);
        targets.push(Arc::new(ProviderSimulator::from_config(
            &config.provider,
            updater,
        )));
    }
    if routes.uses(counters::NAME) {
        let counters = Counters::from_config(client, &config.payments);
        counters.ensure_indexes().await?;
        targets.push(Arc::new(counters));
    }
    if routes.uses(memory_stats::NAME) {
        let stats = MemoryStats::from_config(client, &config.memory);
        stats.ensure_indexes().await?;
        targets.push(Arc::new(stats));
    }
    if routes.uses(KAFKA) || !config.kafka.raw.is_empty() {
        targets.push(Arc::new(KafkaSink::start(&config.kafka).await?));
    }
    Ok(targets)
}

/// `hours` as a duration, for the processed-id TTLs.
fn hours(hours: u64) -> Duration {
    Duration::from_secs(hours.saturating_mul(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoutesConfig;

    #[test]
    fn the_routes_section_has_a_key_for_every_kind() {
        let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(RoutesConfig::KINDS, kinds.as_slice());
    }

    #[test]
    fn defaults_publish_everything_and_feed_the_handlers() {
        let routes = RoutesConfig::default();
        assert_eq!(routes.validate(&built_in()), Ok(()));
        for kind in EventKind::ALL {
            assert!(routes.lists(kind.as_str(), KAFKA), "{kind:?} goes to Kafka");
        }
        assert!(routes.lists("payment_requested", provider_simulator::NAME));
        assert!(!routes.lists("payment_requested", counters::NAME));
        assert!(routes.uses(KAFKA));
    }

    #[test]
    fn unknown_or_unfit_targets_are_refused_with_their_key() {
        let routes = RoutesConfig {
            payment_updated: vec!["kafak".into()],
            ..RoutesConfig::default()
        };
        let (key, message) = routes.validate(&built_in()).expect_err("typo");
        assert_eq!(key, "routes.payment_updated[0]");
        assert!(
            message.contains("known: provider_simulator, counters, memory_stats, kafka"),
            "{message}"
        );

        let mut routes = RoutesConfig::default();
        routes.payment_requested.push(counters::NAME.into());
        let (key, message) = routes
            .validate(&built_in())
            .expect_err("counters take settled payments");
        assert_eq!(key, "routes.payment_requested[2]");
        assert!(
            message.contains("does not take payment_requested"),
            "{message}"
        );
    }
}

//! The `[routes]` section: per payment event kind, the built-in targets that take it —
//! in-process handlers by name and/or `kafka` (the payments topic).

use serde::{Deserialize, Serialize};

use crate::domain::payments::PaymentEventKind;
use crate::handlers::{counters, provider_simulator};

/// The target that publishes to Kafka.
pub const KAFKA: &str = "kafka";

/// Every built-in target and the kinds it can take.
const TARGETS: [(&str, &[PaymentEventKind]); 3] = [
    (provider_simulator::NAME, provider_simulator::KINDS),
    (counters::NAME, counters::KINDS),
    (KAFKA, &PaymentEventKind::ALL),
];

/// Targets per payment event kind. Handlers added through the library API (not built in)
/// route by their own `wants` and are not named here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// Targets of `changeflow.payment.requested.v1`.
    pub payment_requested: Vec<String>,
    /// Targets of `changeflow.payment.confirmed.v1`.
    pub payment_confirmed: Vec<String>,
    /// Targets of `changeflow.payment.failed.v1`.
    pub payment_failed: Vec<String>,
    /// Targets of `changeflow.payment.updated.v1`.
    pub payment_updated: Vec<String>,
    /// Targets of `changeflow.payment.deleted.v1`.
    pub payment_deleted: Vec<String>,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        let targets = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        RoutesConfig {
            payment_requested: targets(&[provider_simulator::NAME, KAFKA]),
            payment_confirmed: targets(&[counters::NAME, KAFKA]),
            payment_failed: targets(&[counters::NAME, KAFKA]),
            payment_updated: targets(&[KAFKA]),
            payment_deleted: targets(&[KAFKA]),
        }
    }
}

impl RoutesConfig {
    /// The targets of `kind`.
    pub fn targets(&self, kind: PaymentEventKind) -> &[String] {
        match kind {
            PaymentEventKind::Requested => &self.payment_requested,
            PaymentEventKind::Confirmed => &self.payment_confirmed,
            PaymentEventKind::Failed => &self.payment_failed,
            PaymentEventKind::Updated => &self.payment_updated,
            PaymentEventKind::Deleted => &self.payment_deleted,
        }
    }

    /// Whether `target` takes events of `kind`. Names that are not built-in targets are
    /// not governed by this section: always true.
    pub fn routes(&self, kind: PaymentEventKind, target: &str) -> bool {
        !is_built_in(target) || self.targets(kind).iter().any(|t| t == target)
    }

    /// Whether any kind goes to `target`.
    pub fn uses(&self, target: &str) -> bool {
        PaymentEventKind::ALL
            .iter()
            .any(|kind| self.targets(*kind).iter().any(|t| t == target))
    }

    /// Checks every named target exists and can take the kind; returns the key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for kind in PaymentEventKind::ALL {
            let mut seen = Vec::new();
            for (i, name) in self.targets(kind).iter().enumerate() {
                let key = format!("routes.{}[{i}]", kind.as_str());
                let Some((_, kinds)) = TARGETS.iter().find(|(n, _)| n == name) else {
                    let known: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
                    return Err((
                        key,
                        format!("unknown target `{name}` (known: {})", known.join(", ")),
                    ));
                };
                if !kinds.contains(&kind) {
                    return Err((
                        key,
                        format!("`{name}` does not take {} events", kind.as_str()),
                    ));
                }
                if seen.contains(&name) {
                    return Err((key, format!("`{name}` is listed twice")));
                }
                seen.push(name);
            }
        }
        Ok(())
    }
}

fn is_built_in(target: &str) -> bool {
    TARGETS.iter().any(|(name, _)| *name == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_publish_everything_and_feed_the_handlers() {
        let routes = RoutesConfig::default();
        assert_eq!(routes.validate(), Ok(()));
        for kind in PaymentEventKind::ALL {
            assert!(routes.routes(kind, KAFKA), "{kind:?} goes to Kafka");
        }
        assert!(routes.routes(PaymentEventKind::Requested, provider_simulator::NAME));
        assert!(!routes.routes(PaymentEventKind::Requested, counters::NAME));
        assert!(routes.routes(PaymentEventKind::Requested, "a_library_handler"));
        assert!(routes.uses(KAFKA));
    }

    #[test]
    fn unknown_or_unfit_targets_are_refused_with_their_key() {
        let routes = RoutesConfig {
            payment_updated: vec!["kafak".into()],
            ..RoutesConfig::default()
        };
        let (key, message) = routes.validate().expect_err("typo");
        assert_eq!(key, "routes.payment_updated[0]");
        assert!(
            message.contains("known: provider_simulator, counters, kafka"),
            "{message}"
        );

        let mut routes = RoutesConfig::default();
        routes.payment_requested.push(counters::NAME.into());
        let (key, message) = routes
            .validate()
            .expect_err("counters take settled payments");
        assert_eq!(key, "routes.payment_requested[2]");
        assert!(
            message.contains("does not take payment_requested"),
            "{message}"
        );
    }
}

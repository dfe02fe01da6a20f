//! The `[routes]` section: per event kind, the built-in targets that take it — in-process
//! handlers by name and/or `kafka` (the payments or memory topic).

use serde::{Deserialize, Serialize};

use crate::domain::EventKind;
use crate::targets::{counters, memory_stats, provider_simulator};

/// The target that publishes to Kafka.
pub const KAFKA: &str = "kafka";

/// Every built-in target and the kinds it can take.
const TARGETS: [(&str, &[EventKind]); 4] = [
    (provider_simulator::NAME, provider_simulator::KINDS),
    (counters::NAME, counters::KINDS),
    (memory_stats::NAME, memory_stats::KINDS),
    (KAFKA, &EventKind::ALL),
];

/// Declares the section: one field per event kind, its default targets, and the lookup
/// by kind (so a kind cannot be added without its key).
macro_rules! routes_config {
    ($($field:ident => $kind:ident [$($target:expr),*];)*) => {
        /// Targets per event kind. Handlers added through the library API (not built in)
        /// route by their own `wants` and are not named here.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RoutesConfig {
            $(
                #[doc = concat!("Targets of `", stringify!($field), "` events.")]
                pub $field: Vec<String>,
            )*
        }

        impl Default for RoutesConfig {
            fn default() -> Self {
                RoutesConfig {
                    $($field: vec![$(String::from($target)),*],)*
                }
            }
        }

        impl RoutesConfig {
            /// The targets of `kind`.
            pub fn targets(&self, kind: EventKind) -> &[String] {
                match kind {
                    $(EventKind::$kind => &self.$field,)*
                }
            }

            /// Replaces the targets of `kind`.
            pub fn set_targets(&mut self, kind: EventKind, targets: Vec<String>) {
                match kind {
                    $(EventKind::$kind => self.$field = targets,)*
                }
            }
        }
    };
}

routes_config! {
    payment_requested => PaymentRequested [provider_simulator::NAME, KAFKA];
    payment_confirmed => PaymentConfirmed [counters::NAME, KAFKA];
    payment_failed => PaymentFailed [counters::NAME, KAFKA];
    payment_updated => PaymentUpdated [KAFKA];
    payment_deleted => PaymentDeleted [KAFKA];
    thread_started => ThreadStarted [memory_stats::NAME, KAFKA];
    messages_appended => MessagesAppended [memory_stats::NAME, KAFKA];
    thread_summarized => ThreadSummarized [memory_stats::NAME, KAFKA];
    thread_updated => ThreadUpdated [KAFKA];
    thread_expired => ThreadExpired [memory_stats::NAME, KAFKA];
    thread_deleted => ThreadDeleted [KAFKA];
    episode_recorded => EpisodeRecorded [memory_stats::NAME, KAFKA];
    episode_amended => EpisodeAmended [KAFKA];
    episode_purged => EpisodePurged [KAFKA];
    memory_learned => MemoryLearned [memory_stats::NAME, KAFKA];
    memory_recalled => MemoryRecalled [memory_stats::NAME, KAFKA];
    memory_decayed => MemoryDecayed [memory_stats::NAME, KAFKA];
    memory_revised => MemoryRevised [KAFKA];
    memory_updated => MemoryUpdated [KAFKA];
    memory_forgotten => MemoryForgotten [KAFKA];
}

impl RoutesConfig {
    /// Whether `target` takes events of `kind`. Names that are not built-in targets are
    /// not governed by this section: always true.
    pub fn routes(&self, kind: EventKind, target: &str) -> bool {
        !is_built_in(target) || self.targets(kind).iter().any(|t| t == target)
    }

    /// Whether any kind goes to `target`.
    pub fn uses(&self, target: &str) -> bool {
        EventKind::ALL
            .iter()
            .any(|kind| self.targets(*kind).iter().any(|t| t == target))
    }

    /// Checks every named target exists and can take the kind; returns the key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for kind in EventKind::ALL {
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
        for kind in EventKind::ALL {
            assert!(routes.routes(kind, KAFKA), "{kind:?} goes to Kafka");
        }
        assert!(routes.routes(EventKind::PaymentRequested, provider_simulator::NAME));
        assert!(!routes.routes(EventKind::PaymentRequested, counters::NAME));
        assert!(routes.routes(EventKind::PaymentRequested, "a_library_handler"));
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
            message.contains("known: provider_simulator, counters, memory_stats, kafka"),
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

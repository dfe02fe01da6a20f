//! The `[routes]` section: per event kind (by its name), the built-in targets that take
//! it — in-process handlers by name and/or `kafka` (the payments or memory topic). Which
//! targets exist and what they take is known where they are built (`crate::targets`) and
//! passed in to [`RoutesConfig::validate`].

use serde::{Deserialize, Serialize};

/// The target that publishes to Kafka.
pub(crate) const KAFKA: &str = "kafka";
/// The simulated payment provider.
const PROVIDER_SIMULATOR: &str = "provider_simulator";
/// The exactly-once payment counters.
const COUNTERS: &str = "counters";
/// The exactly-once memory statistics.
const MEMORY_STATS: &str = "memory_stats";

/// A built-in target as route validation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltIn {
    /// Its name in `[routes]`.
    pub name: &'static str,
    /// The kinds (by name) it can take.
    pub kinds: Vec<&'static str>,
}

/// Declares the section: one field per event kind, its default targets, and the lookup
/// by kind (so a kind cannot be added without its key).
macro_rules! routes_config {
    ($($field:ident [$($target:expr),*];)*) => {
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
            /// The name of every kind the section has a key for.
            pub const KINDS: &[&str] = &[$(stringify!($field)),*];

            /// The targets of the kind named `kind` (none for a name it has no key for).
            pub fn targets(&self, kind: &str) -> &[String] {
                match kind {
                    $(stringify!($field) => &self.$field,)*
                    _ => &[],
                }
            }

            /// Replaces the targets of the kind named `kind`; false for a name it has no
            /// key for.
            pub fn set_targets(&mut self, kind: &str, targets: Vec<String>) -> bool {
                match kind {
                    $(stringify!($field) => self.$field = targets,)*
                    _ => return false,
                }
                true
            }
        }
    };
}

routes_config! {
    payment_requested [PROVIDER_SIMULATOR, KAFKA];
    payment_confirmed [COUNTERS, KAFKA];
    payment_failed [COUNTERS, KAFKA];
    payment_updated [KAFKA];
    payment_deleted [KAFKA];
    payment_observed [PROVIDER_SIMULATOR, COUNTERS, KAFKA];
    thread_started [MEMORY_STATS, KAFKA];
    messages_appended [MEMORY_STATS, KAFKA];
    thread_summarized [MEMORY_STATS, KAFKA];
    thread_updated [KAFKA];
    thread_expired [MEMORY_STATS, KAFKA];
    thread_deleted [KAFKA];
    thread_observed [KAFKA];
    episode_recorded [MEMORY_STATS, KAFKA];
    episode_amended [KAFKA];
    episode_purged [KAFKA];
    episode_observed [KAFKA];
    memory_learned [MEMORY_STATS, KAFKA];
    memory_recalled [MEMORY_STATS, KAFKA];
    memory_decayed [MEMORY_STATS, KAFKA];
    memory_revised [KAFKA];
    memory_updated [KAFKA];
    memory_forgotten [KAFKA];
    memory_observed [KAFKA];
}

impl RoutesConfig {
    /// Whether the kind named `kind` goes to `target`.
    pub fn lists(&self, kind: &str, target: &str) -> bool {
        self.targets(kind).iter().any(|t| t == target)
    }

    /// Keeps, for every kind, only the targets `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        for kind in Self::KINDS {
            let kept = self
                .targets(kind)
                .iter()
                .filter(|t| keep(t))
                .cloned()
                .collect();
            self.set_targets(kind, kept);
        }
    }

    /// Whether any kind goes to `target`.
    pub fn uses(&self, target: &str) -> bool {
        Self::KINDS.iter().any(|kind| self.lists(kind, target))
    }

    /// Checks every named target is one of `built_in` and can take the kind; returns the
    /// key and why.
    pub fn validate(&self, built_in: &[BuiltIn]) -> Result<(), (String, String)> {
        for kind in Self::KINDS {
            let mut seen = Vec::new();
            for (i, name) in self.targets(kind).iter().enumerate() {
                let key = format!("routes.{kind}[{i}]");
                let Some(target) = built_in.iter().find(|t| t.name == name) else {
                    let known: Vec<&str> = built_in.iter().map(|t| t.name).collect();
                    return Err((
                        key,
                        format!("unknown target `{name}` (known: {})", known.join(", ")),
                    ));
                };
                if !target.kinds.contains(kind) {
                    return Err((key, format!("`{name}` does not take {kind} events")));
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

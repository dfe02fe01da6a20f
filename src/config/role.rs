//! What one `changeflow run` does (`--role`): everything, or half of a split deployment
//! in which capture instances read the streams and publish to Kafka, and handlers
//! instances consume the typed-event topics in a consumer group and run the handlers.

use std::fmt;
use std::str::FromStr;

use super::routes::{KAFKA, RoutesConfig};

/// The part of the pipeline an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Streams, handlers and Kafka in one process.
    #[default]
    All,
    /// Streams to Kafka only; no handler runs.
    Capture,
    /// The handlers, fed from Kafka; no stream is read.
    Handlers,
}

/// The handlers that can run in the handlers role (they take payment events, which the
/// payments topic carries whole).
pub const SPLIT_HANDLERS: &[&str] = &["provider_simulator", "counters"];

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::All, Role::Capture, Role::Handlers];

    /// Whether it reads change streams (and so takes leases).
    pub fn reads_streams(self) -> bool {
        self != Role::Handlers
    }

    /// Whether it runs the in-process handlers.
    pub fn runs_handlers(self) -> bool {
        self != Role::Capture
    }

    /// The name, as `--role` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Capture => "capture",
            Role::Handlers => "handlers",
        }
    }

    /// Refuses routes that would drop a handler's input once the roles are split: a
    /// handler instance sees only what capture publishes, so every kind routed to a
    /// handler must be routed to Kafka too. Returns the offending key and why.
    pub fn check(self, routes: &RoutesConfig) -> Result<(), (String, String)> {
        if self == Role::All {
            return Ok(());
        }
        for kind in RoutesConfig::KINDS {
            let targets = routes.targets(kind);
            for handler in targets.iter().filter(|t| t.as_str() != KAFKA) {
                if !SPLIT_HANDLERS.contains(&handler.as_str()) {
                    return Err((
                        format!("routes.{kind}"),
                        format!(
                            "`{handler}` cannot run with --role {self}: the handlers role runs {} \
                             (fed from the payments topic); run it with --role all, or remove it",
                            SPLIT_HANDLERS.join(" and ")
                        ),
                    ));
                }
                if !targets.iter().any(|t| t == KAFKA) {
                    return Err((
                        format!("routes.{kind}"),
                        format!(
                            "sends to `{handler}` but not to kafka: with --role {self} the \
                             handlers instances see only what capture publishes, so `{handler}` \
                             would never get it; add \"kafka\" to the route"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Role::All),
            "capture" => Ok(Role::Capture),
            "handlers" => Ok(Role::Handlers),
            other => Err(format!(
                "unknown role `{}` (expected all, capture or handlers)",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_routes_compose_when_split() {
        let mut routes = RoutesConfig::default();
        // memory_stats runs only with --role all.
        routes.retain(|t| t != "memory_stats");
        for role in [Role::All, Role::Capture, Role::Handlers] {
            assert_eq!(role.check(&routes), Ok(()), "{role}");
        }
    }

    #[test]
    fn a_handler_route_without_kafka_is_refused_once_split() {
        let mut routes = RoutesConfig::default();
        routes.set_targets("payment_confirmed", vec!["counters".into()]);
        assert_eq!(Role::All.check(&routes), Ok(()));
        let (key, why) = Role::Capture.check(&routes).expect_err("dropped input");
        assert_eq!(key, "routes.payment_confirmed");
        assert!(why.contains("add \"kafka\""), "{why}");
        assert!(Role::Handlers.check(&routes).is_err());
    }

    #[test]
    fn memory_stats_is_refused_once_split_and_roles_parse() {
        let routes = RoutesConfig::default();
        if routes.uses("memory_stats") {
            let (_, why) = Role::Handlers.check(&routes).expect_err("memory_stats");
            assert!(why.contains("--role all"), "{why}");
        }
        assert_eq!("capture".parse(), Ok(Role::Capture));
        assert!("both".parse::<Role>().unwrap_err().contains("expected all"));
    }
}

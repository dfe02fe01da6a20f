//! The one line `main` prints after an error: what to try next.

use crate::config::Config;
use crate::config::redact::redact_uri;
use crate::pipeline::EngineError;
use crate::source::connect::ConnectError;

/// One line that tells what to try next for `error`.
pub fn hint(error: &anyhow::Error, config: &Config) -> String {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ConnectError>() {
            return match e {
                ConnectError::Options { .. } => {
                    "check mongodb.uri (or CHANGEFLOW_MONGODB_URI): mongodb://[user:password@]host[:port][/?replicaSet=NAME]".to_owned()
                }
                ConnectError::Unreachable { .. } => format!(
                    "is a replica set running at {} and are the credentials right? \
                     `cargo xtask up` starts a local one",
                    redact_uri(&config.mongodb.uri)
                ),
            };
        }
        if let Some(EngineError::Oversize { stream, token, .. }) =
            cause.downcast_ref::<EngineError>()
        {
            return format!(
                "ways out: engine.oversize = \"dead-letter\" records such a change in \
                 changeflow_dead_letters and goes on; MongoDB 6.0.9 or later splits it \
                 (with engine.split_large_events = true); or `changeflow checkpoint set \
                 --stream {stream} --token {token}` moves past it"
            );
        }
        if let Some(EngineError::HistoryLost(lost)) = cause.downcast_ref::<EngineError>() {
            return if lost.replay {
                "`changeflow status` shows the oplog window of every member".to_owned()
            } else {
                "pick one of the ways out above; `changeflow status` shows the oplog window"
                    .to_owned()
            };
        }
        if cause
            .downcast_ref::<crate::targets::kafka::PublishError>()
            .is_some()
        {
            return format!(
                "is a Kafka broker reachable at {} (kafka.brokers)?",
                config.kafka.brokers
            );
        }
    }
    for (marker, hint) in HINTS_BY_TEXT {
        if error.chain().any(|c| c.to_string().contains(marker)) {
            return hint.to_owned();
        }
    }
    "`changeflow <command> --help` lists the options with examples".to_owned()
}

/// Hints for errors recognised by their text (they reach here through several layers).
const HINTS_BY_TEXT: [(&str, &str); 2] = [
    (
        "is being processed by changeflow run",
        "`changeflow status` shows which run holds each stream; stop it with Ctrl-C or \
         SIGTERM (it stores its final checkpoint and releases the stream)",
    ),
    (
        "(Unauthorized)",
        "the MongoDB user lacks a privilege named above; README \"Privileges\" lists what \
         each command needs",
    ),
];

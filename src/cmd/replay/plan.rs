//! Which streams and collections a replay reads, its id, and the configuration narrowed to
//! it.

use anyhow::bail;

use super::*;
use crate::config::routes::KAFKA;
use crate::config::{Config, WatchedDatabase};
use crate::source::position::Until;
use crate::source::position::cluster_time_text;

/// The watched databases `request` selects, each narrowed to the selected collections.
pub(crate) fn select_streams(
    watch: &[WatchedDatabase],
    stream: Option<&str>,
    collections: &[String],
) -> anyhow::Result<Vec<WatchedDatabase>> {
    let names: Vec<&str> = watch.iter().map(|w| w.database.as_str()).collect();
    if let Some(s) = stream
        && !names.contains(&s)
    {
        bail!(
            "--stream `{s}` is not a watched database (watched: {})",
            names.join(", ")
        );
    }
    let mut selected: Vec<WatchedDatabase> = watch
        .iter()
        .filter(|w| stream.is_none_or(|s| s == w.database))
        .cloned()
        .collect();
    if collections.is_empty() {
        return Ok(selected);
    }
    for wanted in collections {
        let known = selected.iter().any(|w| {
            w.collections
                .iter()
                .any(|c| names_collection(wanted, &w.database, c))
        });
        if !known {
            let all: Vec<String> = selected
                .iter()
                .flat_map(|w| w.collections.iter().map(|c| format!("{}.{c}", w.database)))
                .collect();
            bail!(
                "--collections: `{wanted}` is not a watched collection{} (watched: {})",
                stream
                    .map(|s| format!(" of stream `{s}`"))
                    .unwrap_or_default(),
                all.join(", ")
            );
        }
    }
    for w in &mut selected {
        let database = &w.database;
        w.collections.retain(|c| {
            collections
                .iter()
                .any(|wanted| names_collection(wanted, database, c))
        });
    }
    selected.retain(|w| !w.collections.is_empty());
    Ok(selected)
}

/// Whether `wanted` (`collection` or `database.collection`) names `database`.`collection`.
fn names_collection(wanted: &str, database: &str, collection: &str) -> bool {
    wanted == collection
        || wanted
            .strip_prefix(database)
            .and_then(|rest| rest.strip_prefix('.'))
            == Some(collection)
}

/// A replay's id: the same request gets the same id, so running it again continues it.
pub(super) fn replay_id(request: &Request, streams: &[WatchedDatabase]) -> String {
    let until = match &request.until {
        None => "start".to_owned(),
        Some(Until::Time(t)) => cluster_time_text(*t),
        Some(Until::Token(data)) => data.clone(),
    };
    let streams: Vec<String> = streams
        .iter()
        .map(|w| format!("{}:{}", w.database, w.collections.join(",")))
        .collect();
    let key = format!(
        "from={};until={until};streams={};to={:?};handlers={};dry_run={}",
        request.from.describe(),
        streams.join("|"),
        request.to,
        request.handlers,
        request.dry_run,
    );
    blake3::hash(key.as_bytes()).to_hex()[..16].to_owned()
}

/// The live configuration narrowed to the replay: its streams, and routes that keep Kafka
/// only when replaying to Kafka and handlers only when asked for.
pub(super) fn replay_config(
    config: &Config,
    request: &Request,
    streams: Vec<WatchedDatabase>,
) -> Config {
    let mut replay = config.clone();
    replay.watch = streams;
    let to_kafka = !request.dry_run && matches!(request.to, Destination::Kafka { .. });
    if let Destination::Kafka { topic: Some(topic) } = &request.to {
        // The topic is taken as given; dead letters keep their prefixed topic.
        let kafka = &mut replay.kafka;
        kafka.topics.dead_letters = kafka.topic(&kafka.topics.dead_letters);
        kafka.topic_prefix.clear();
        kafka.topics.payments = topic.clone();
        kafka.topics.memory = topic.clone();
        kafka.topics.namespace = topic.clone();
        for raw in &mut kafka.raw {
            raw.topic = topic.clone();
        }
    }
    if !to_kafka {
        replay.kafka.raw.clear();
    }
    replay.routes.retain(|target| {
        !request.dry_run
            && if target == KAFKA {
                to_kafka
            } else {
                request.handlers
            }
    });
    replay
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_are_selected_by_name_or_namespace() {
        let watch = vec![
            WatchedDatabase {
                database: "shop".into(),
                collections: vec!["payments".into(), "orders".into()],
            },
            WatchedDatabase {
                database: "mem".into(),
                collections: vec!["orders".into()],
            },
        ];
        let picked = select_streams(&watch, None, &["shop.orders".into()]).expect("known");
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].collections, ["orders"]);
        let picked = select_streams(&watch, None, &["orders".into()]).expect("known");
        assert_eq!(picked.len(), 2);
        let picked = select_streams(&watch, Some("mem"), &[]).expect("known");
        assert_eq!(picked[0].database, "mem");
        assert!(select_streams(&watch, None, &["shoporders".into()]).is_err());
        assert!(select_streams(&watch, Some("nope"), &[]).is_err());
    }
}

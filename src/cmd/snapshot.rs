//! `changeflow snapshot`: asks for a snapshot of watched collections. It records the
//! request in `changeflow_snapshots`; the `changeflow run` reading the stream takes it up
//! within seconds, while its stream goes on, and a snapshot already running keeps its
//! place.

use anyhow::{Context, bail};

use crate::config::Config;
use crate::decode::Domains;
use crate::source::connect::connect;
use crate::state::presence;
use crate::state::snapshots::{Reason, Snapshots};

/// Records a snapshot request for `collections` (`name` or `database.name`; none: every
/// collection of every stream that has a domain or is published raw).
pub async fn command(config: &Config, collections: &[String]) -> anyhow::Result<()> {
    let targets = resolve(config, collections)?;
    let client = connect(&config.mongodb.uri).await?;
    let state = client.database(&config.checkpoint.database);
    let store = Snapshots::new(&state);
    for (stream, collection) in &targets {
        let started = store
            .begin(stream, collection, Reason::Requested)
            .await
            .with_context(|| {
                format!(
                    "recording the request in {}",
                    crate::state::snapshots::COLLECTION
                )
            })?;
        if started {
            println!("snapshot requested: {stream}.{collection}");
        } else {
            println!("snapshot already running: {stream}.{collection} (it continues where it is)");
        }
    }
    let streams: std::collections::BTreeSet<&str> =
        targets.iter().map(|(s, _)| s.as_str()).collect();
    for stream in streams {
        let holder = presence::holder(&state, stream)
            .await
            .with_context(|| format!("reading {}", crate::state::leases::COLLECTION))?;
        if holder.is_none() {
            println!(
                "no `changeflow run` is reading stream `{stream}`: the snapshot starts when one does"
            );
        }
    }
    println!("progress: `changeflow status`");
    Ok(())
}

/// The (stream, collection) pairs `names` mean, each checked.
fn resolve(config: &Config, names: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let domains = Domains::of_config(config);
    let snapshotted = |db: &str, coll: &str| domains.snapshots(db, coll);
    let mut targets = Vec::new();
    if names.is_empty() {
        for w in &config.watch {
            for c in &w.collections {
                if snapshotted(&w.database, c) {
                    targets.push((w.database.clone(), c.clone()));
                }
            }
        }
        if targets.is_empty() {
            bail!("no watched collection has a domain or is published raw: nothing to snapshot");
        }
        return Ok(targets);
    }
    for name in names {
        let matches: Vec<(String, String)> = config
            .watch
            .iter()
            .flat_map(|w| {
                w.collections
                    .iter()
                    .map(move |c| (w.database.clone(), c.clone()))
            })
            .filter(|(db, c)| name == c || *name == format!("{db}.{c}"))
            .collect();
        match matches.as_slice() {
            [] => {
                bail!("`{name}` is not a watched collection (see [[watch]] in the configuration)")
            }
            [(db, c)] if !snapshotted(db, c) => bail!(
                "`{db}.{c}` has no domain and is not published raw (kafka.raw): a snapshot of it would emit nothing"
            ),
            [one] => targets.push(one.clone()),
            _ => bail!("`{name}` is watched in several databases: name it as `database.{name}`"),
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_watched_collections_with_a_domain() {
        let config = Config::default();
        let all = resolve(&config, &[]).expect("defaults have domains");
        assert!(all.contains(&("changeflow".into(), "payments".into())));
        assert_eq!(
            resolve(&config, &["payments".into()]).expect("payments"),
            vec![("changeflow".to_owned(), "payments".to_owned())]
        );
        let error = resolve(&config, &["orders".into()]).expect_err("not watched");
        assert!(
            error.to_string().contains("not a watched collection"),
            "{error}"
        );
    }
}

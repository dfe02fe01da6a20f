//! `changeflow tail`: every change of the watched collections, one JSON line each.

use std::io::Write;

use futures::{StreamExt, stream};
use mongodb::Client;

use crate::cmd::shutdown;
use crate::config::{Config, EngineConfig, WatchedDatabase};
use crate::decode::extjson::{RenderError, to_relaxed_json};
use crate::source::connect::connect;
use crate::source::large::{Assembler, Piece};
use crate::source::{self, SourceError, StartAt};

/// Why tailing stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// A change stream failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An event could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The output could not be written (a closed pipe, a full disk).
    #[error("writing to the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Opens one stream per database in `targets` and writes each change to `out` as relaxed
/// Extended JSON until `shutdown` completes. Returns how many events were written.
pub async fn tail(
    client: &Client,
    targets: &[WatchedDatabase],
    options: &EngineConfig,
    start: &StartAt,
    out: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, TailError> {
    let mut streams = Vec::with_capacity(targets.len());
    for target in targets {
        let stream = source::open(client, target, options, start).await?;
        tracing::info!(
            database = %target.database,
            collections = ?target.collections,
            "watching"
        );
        let database = target.database.clone();
        // The database name is only needed, and only cloned, when a read fails.
        // Events over 16 MB come in fragments: print them whole, as the engine sees them.
        let mut fragments = Assembler::default();
        streams.push(
            stream
                .filter_map(move |item| {
                    let item = match item {
                        Ok(raw) => match fragments.push(raw) {
                            Piece::Whole(raw) | Piece::Joined(raw) => Some(Ok(raw)),
                            Piece::Partial { .. } => None,
                            Piece::Broken(reason) => Some(Err(SourceError::Fragments {
                                database: database.clone(),
                                reason,
                            })),
                        },
                        Err(source) => Some(Err(SourceError::Read {
                            database: database.clone(),
                            source,
                        })),
                    };
                    futures::future::ready(item)
                })
                .boxed(),
        );
    }
    let mut merged = stream::select_all(streams);
    tokio::pin!(shutdown);
    let mut written = 0;
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => break,
            next = merged.next() => next,
        };
        let Some(item) = next else { break };
        let change = item?;
        let json = to_relaxed_json(&change)?;
        writeln!(out, "{json}")?;
        out.flush()?;
        written += 1;
    }
    Ok(written)
}

/// `changeflow tail`: prints every change until stopped.
pub async fn command(config: &Config) -> anyhow::Result<()> {
    let client = connect(&config.mongodb.uri).await?;
    let mut out = std::io::stdout().lock();
    let written = tail(
        &client,
        &config.watch,
        &config.engine,
        &StartAt::Now,
        &mut out,
        shutdown::signal(),
    )
    .await;
    crate::source::connect::close(client).await;
    match written {
        Ok(n) => {
            tracing::info!(events = n, "stopped");
            Ok(())
        }
        // `changeflow tail | head` closes the pipe: a normal way to stop.
        Err(TailError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

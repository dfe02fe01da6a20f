//! Typed events as structured CloudEvents, one JSON line each, on standard output (for
//! `changeflow replay --to stdout`). A line counts as delivered once it is written and
//! flushed.

use std::io::Write;

use futures::future::BoxFuture;

use crate::domain::{DomainEvent, EventKind};
use crate::events::cloudevent::CloudEvent;
use crate::pipeline::target::{Input, Routed, Target, TargetError};

/// The target's name in logs and metrics.
pub(crate) const NAME: &str = "stdout";

/// Writes events to standard output.
pub(crate) struct StdoutSink {
    kinds: [bool; EventKind::ALL.len()],
}

impl StdoutSink {
    /// A sink for events of `kinds`.
    pub fn new(kinds: impl IntoIterator<Item = EventKind>) -> StdoutSink {
        let mut wanted = [false; EventKind::ALL.len()];
        for kind in kinds {
            wanted[kind.index()] = true;
        }
        StdoutSink { kinds: wanted }
    }

    fn write(&self, event: &DomainEvent) -> Result<(), TargetError> {
        let fatal = |reason: String| TargetError::Fatal {
            handler: NAME,
            reason,
        };
        let line = CloudEvent::of(event)
            .structured()
            .map_err(|e| fatal(format!("encoding the event: {e}")))?;
        // One lock for the line: lines of concurrent lanes never interleave.
        let mut out = std::io::stdout().lock();
        out.write_all(&line)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            // A closed pipe (`| head`) or a full disk: stop rather than count it as written.
            .map_err(|e| fatal(format!("writing to standard output: {e}")))
    }
}

impl Target for StdoutSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, input: Input) -> bool {
        matches!(input, Input::Typed(kind) if self.kinds[kind.index()])
    }

    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            match event {
                Routed::Typed(event) => self.write(event),
                Routed::Raw(_) | Routed::Namespace { .. } => Ok(()),
            }
        })
    }
}

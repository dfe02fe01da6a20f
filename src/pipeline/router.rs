//! Which handlers take an event of a given kind: computed once, looked up per event.

use std::sync::Arc;

use crate::config::RoutesConfig;
use crate::domain::EventKind;
use crate::targets::Handler;

/// The handlers of one event kind.
pub type Route = Arc<[Arc<dyn Handler>]>;

/// Handlers per event kind.
pub struct Router {
    by_kind: [Route; EventKind::ALL.len()],
    /// Each kind's route split into ordered handlers and those whose effects commute.
    split: [(Route, Route); EventKind::ALL.len()],
}

impl Router {
    /// Routes each kind to the handlers that want it and that `routes` sends it to (it
    /// governs the built-in targets), in the order given.
    pub fn new(handlers: &[Arc<dyn Handler>], routes: &RoutesConfig) -> Router {
        let by_kind: [Route; EventKind::ALL.len()] = EventKind::ALL.map(|kind| {
            handlers
                .iter()
                .filter(|h| h.wants(kind) && routes.routes(kind, h.name()))
                .cloned()
                .collect::<Vec<_>>()
                .into()
        });
        let split = std::array::from_fn(|i| {
            let (ordered, free): (Vec<_>, Vec<_>) =
                by_kind[i].iter().cloned().partition(|h| h.ordered());
            (ordered.into(), free.into())
        });
        Router { by_kind, split }
    }

    /// Every routed handler's name, once each.
    pub fn handler_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .by_kind
            .iter()
            .flat_map(|route| route.iter().map(|h| h.name()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The handlers of `kind` (possibly none).
    pub fn route(&self, kind: EventKind) -> &Route {
        &self.by_kind[kind.index()]
    }

    /// The handlers of `kind` that take a key's events in order, and those whose effects
    /// commute (see [`Handler::ordered`]).
    pub fn split(&self, kind: EventKind) -> (&Route, &Route) {
        let (ordered, free) = &self.split[kind.index()];
        (ordered, free)
    }
}

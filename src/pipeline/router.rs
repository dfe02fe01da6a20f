//! Which targets take an event: computed once per input (typed kind, raw, namespace),
//! looked up per event.

use std::sync::Arc;

use crate::config::RoutesConfig;
use crate::pipeline::target::{Input, Target};

/// The targets of one input.
pub(crate) type Route = Arc<[Arc<dyn Target>]>;

/// Targets per input.
pub(crate) struct Router {
    by_input: [Route; Input::COUNT],
    /// Each input's route split into ordered targets and those whose effects commute.
    split: [(Route, Route); Input::COUNT],
}

impl Router {
    /// Routes each input to the targets that want it, in the order given. For typed
    /// events, `routes` also decides for the targets it governs (the built-in ones).
    pub fn new(targets: &[Arc<dyn Target>], routes: &RoutesConfig) -> Router {
        let by_input: [Route; Input::COUNT] = std::array::from_fn(|i| {
            let input = Input::at(i);
            targets
                .iter()
                .filter(|t| t.wants(input))
                .filter(|t| match input {
                    Input::Typed(kind) => {
                        !t.routed_by_config() || routes.lists(kind.as_str(), t.name())
                    }
                    Input::Raw | Input::Namespace => true,
                })
                .cloned()
                .collect::<Vec<_>>()
                .into()
        });
        let split = std::array::from_fn(|i| {
            let (ordered, free): (Vec<_>, Vec<_>) =
                by_input[i].iter().cloned().partition(|t| t.ordered());
            (ordered.into(), free.into())
        });
        Router { by_input, split }
    }

    /// Every routed target's name, once each.
    pub fn target_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .by_input
            .iter()
            .flat_map(|route| route.iter().map(|t| t.name()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The targets of `input` (possibly none).
    pub fn route(&self, input: Input) -> &Route {
        &self.by_input[input.index()]
    }

    /// The targets of `input` that take a key's events in order, and those whose effects
    /// commute (see [`Target::ordered`]).
    pub fn split(&self, input: Input) -> (&Route, &Route) {
        let (ordered, free) = &self.split[input.index()];
        (ordered, free)
    }
}

//! The `data` of namespace events as published: what happened to a watched namespace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::namespace::{NamespaceChange, NamespaceEvent};
use crate::source::position::cluster_time_text;

/// A watched collection dropped or renamed, its database dropped, or a stream invalidated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "NamespaceChange")]
pub(crate) struct NamespaceData {
    /// The stream that saw it: the watched database.
    #[schemars(length(min = 1))]
    pub stream: String,
    /// `database.collection` (collection events) or `database` (database events); absent
    /// for an invalidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A rename's new namespace, `database.collection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The change's cluster time, `<seconds>.<increment>` (what `changeflow replay
    /// --from-time` takes).
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_time: Option<String>,
}

impl NamespaceData {
    /// The data of `event`, seen by `stream`.
    pub fn of(stream: &str, event: &NamespaceEvent) -> NamespaceData {
        NamespaceData {
            stream: stream.to_owned(),
            namespace: event.namespace.clone(),
            to: match &event.change {
                NamespaceChange::CollectionRenamed { to } => Some(to.clone()),
                _ => None,
            },
            cluster_time: event.cluster_time.map(cluster_time_text),
        }
    }
}

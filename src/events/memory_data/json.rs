//! A memory event to the JSON of its data.

use super::*;
use crate::domain::memory::{MemoryChange, MemoryEvent};
use crate::source::position::cluster_time_text;

/// The JSON data of a memory event.
pub(crate) fn memory_json(event: &MemoryEvent) -> Vec<u8> {
    let event_id = event.meta.event_id.to_string();
    let cluster_time = cluster_time_text(event.meta.cluster_time);
    let user_id = event.user_id.clone();
    let id = event.document_id.clone();
    macro_rules! data {
        ($name:ident, $id_field:ident { $($field:ident : $value:expr),* $(,)? }) => {
            serde_json::to_vec(&$name {
                event_id,
                cluster_time,
                user_id,
                $id_field: id,
                $($field: $value,)*
            })
        };
    }
    let encoded = match &event.change {
        MemoryChange::ThreadStarted {
            messages: m,
            created_at,
            expires_at,
        } => data!(
            ThreadStartedData,
            thread_id {
                messages: messages(m),
                created_at: created_at.map(rfc3339),
                expires_at: expires_at.map(rfc3339),
            }
        ),
        MemoryChange::MessagesAppended { messages: m } => {
            data!(
                MessagesAppendedData,
                thread_id {
                    messages: messages(m)
                }
            )
        }
        MemoryChange::ThreadSummarized {
            summary,
            messages_dropped,
            messages_appended,
            messages_remaining,
        } => {
            let text = summary.as_ref().map(Text::from).unwrap_or_default();
            data!(
                ThreadSummarizedData,
                thread_id {
                    summary: text.text,
                    summary_sha256: text.sha256,
                    messages_dropped: *messages_dropped,
                    messages_appended: messages(messages_appended),
                    messages_remaining: *messages_remaining,
                }
            )
        }
        MemoryChange::ThreadUpdated { changed_fields } => {
            data!(
                ThreadUpdatedData,
                thread_id {
                    changed_fields: changed_fields.clone()
                }
            )
        }
        MemoryChange::ThreadExpired {
            expires_at,
            message_count,
        } => data!(
            ThreadExpiredData,
            thread_id {
                expires_at: rfc3339(*expires_at),
                message_count: *message_count,
            }
        ),
        MemoryChange::ThreadDeleted {
            expires_at,
            message_count,
        } => data!(
            ThreadDeletedData,
            thread_id {
                expires_at: expires_at.map(rfc3339),
                message_count: *message_count,
            }
        ),
        MemoryChange::ThreadObserved {
            messages: m,
            summary,
            created_at,
            expires_at,
        } => {
            let text = summary.as_ref().map(Text::from).unwrap_or_default();
            data!(
                ThreadObservedData,
                thread_id {
                    messages: messages(m),
                    summary: text.text,
                    summary_sha256: text.sha256,
                    created_at: created_at.map(rfc3339),
                    expires_at: expires_at.map(rfc3339),
                }
            )
        }
        MemoryChange::MemoryObserved {
            memory_type: t,
            content,
            embedding: e,
            source_episode_id,
            strength,
            last_accessed_at,
        } => {
            let text = Text::from(content);
            let (dimensions, values) = embedding(e.as_ref());
            data!(
                MemoryObservedData,
                memory_id {
                    memory_type: memory_type(*t),
                    content: text.text,
                    content_sha256: text.sha256,
                    embedding_dimensions: dimensions,
                    embedding: values,
                    source_episode_id: source_episode_id.clone(),
                    strength: *strength,
                    last_accessed_at: last_accessed_at.map(rfc3339),
                }
            )
        }
        // An observed episode is the same record, as a snapshot found it.
        MemoryChange::EpisodeRecorded(e) | MemoryChange::EpisodeObserved(e) => {
            let text = Text::from(&e.summary);
            data!(
                EpisodeRecordedData,
                episode_id {
                    thread_id: e.thread_id.clone(),
                    outcome: outcome(e.outcome),
                    tags: e.tags.clone(),
                    tool_calls: e.tool_calls,
                    failed_tool_calls: e.failed_tool_calls,
                    started_at: rfc3339(e.started_at),
                    ended_at: rfc3339(e.ended_at),
                    duration_ms: e.ended_at.timestamp_millis() - e.started_at.timestamp_millis(),
                    summary: text.text,
                    summary_sha256: text.sha256,
                }
            )
        }
        MemoryChange::EpisodeAmended {
            changed_fields,
            outcome: o,
        } => data!(
            EpisodeAmendedData,
            episode_id {
                changed_fields: changed_fields.clone(),
                outcome: o.map(outcome),
            }
        ),
        MemoryChange::EpisodePurged { outcome: o } => {
            data!(
                EpisodePurgedData,
                episode_id {
                    outcome: o.map(outcome)
                }
            )
        }
        MemoryChange::MemoryLearned {
            memory_type: t,
            content,
            embedding: e,
            source_episode_id,
            strength,
        } => {
            let text = Text::from(content);
            let (dimensions, values) = embedding(e.as_ref());
            data!(
                MemoryLearnedData,
                memory_id {
                    memory_type: memory_type(*t),
                    content: text.text,
                    content_sha256: text.sha256,
                    embedding_dimensions: dimensions,
                    embedding: values,
                    source_episode_id: source_episode_id.clone(),
                    strength: *strength,
                }
            )
        }
        MemoryChange::MemoryRecalled {
            strength,
            previous_strength,
            last_accessed_at,
        } => data!(
            MemoryRecalledData,
            memory_id {
                strength: *strength,
                previous_strength: *previous_strength,
                last_accessed_at: last_accessed_at.map(rfc3339),
            }
        ),
        MemoryChange::MemoryDecayed {
            strength,
            previous_strength,
        } => data!(
            MemoryDecayedData,
            memory_id {
                strength: *strength,
                previous_strength: *previous_strength,
            }
        ),
        MemoryChange::MemoryRevised {
            changed_fields,
            memory_type: t,
            content,
            embedding: e,
        } => {
            let text = content.as_ref().map(Text::from).unwrap_or_default();
            let (dimensions, values) = embedding(e.as_ref());
            data!(
                MemoryRevisedData,
                memory_id {
                    changed_fields: changed_fields.clone(),
                    memory_type: t.map(memory_type),
                    content: text.text,
                    content_sha256: text.sha256,
                    embedding_dimensions: dimensions,
                    embedding: values,
                }
            )
        }
        MemoryChange::MemoryUpdated {
            changed_fields,
            strength,
            previous_strength,
            direction: d,
        } => data!(
            MemoryUpdatedData,
            memory_id {
                changed_fields: changed_fields.clone(),
                strength: *strength,
                previous_strength: *previous_strength,
                direction: direction(*d),
            }
        ),
        MemoryChange::MemoryForgotten { memory_type: t } => {
            data!(
                MemoryForgottenData,
                memory_id {
                    memory_type: t.map(memory_type)
                }
            )
        }
    };
    // Plain structs of strings and finite numbers serialise without fail.
    encoded.unwrap_or_else(|e| unreachable!("memory data is serialisable: {e}"))
}

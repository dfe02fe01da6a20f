//! Every kind of typed event, across domains: what routes, metrics and the published
//! catalog are keyed by.

/// The kind of a typed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A PENDING payment was created.
    PaymentRequested,
    /// A payment became CONFIRMED.
    PaymentConfirmed,
    /// A payment became FAILED.
    PaymentFailed,
    /// Any other change to a payment.
    PaymentUpdated,
    /// A payment was deleted.
    PaymentDeleted,
    /// A payment as a snapshot found it (it existed before the stream, or changed while
    /// history was lost).
    PaymentObserved,
    /// A conversation thread was created.
    ThreadStarted,
    /// Messages were appended to a thread.
    MessagesAppended,
    /// A thread's summary changed and/or old messages were folded away.
    ThreadSummarized,
    /// Any other change to a thread.
    ThreadUpdated,
    /// The TTL monitor removed an expired thread.
    ThreadExpired,
    /// A thread was deleted before it expired.
    ThreadDeleted,
    /// A thread as a snapshot found it.
    ThreadObserved,
    /// A finished thread was recorded as an episode.
    EpisodeRecorded,
    /// An episode was changed.
    EpisodeAmended,
    /// An episode was deleted.
    EpisodePurged,
    /// An episode as a snapshot found it.
    EpisodeObserved,
    /// A semantic memory was created.
    MemoryLearned,
    /// A semantic memory was accessed and grew stronger.
    MemoryRecalled,
    /// A semantic memory grew weaker.
    MemoryDecayed,
    /// A semantic memory's content, type or embedding changed.
    MemoryRevised,
    /// Any other change to a semantic memory.
    MemoryUpdated,
    /// A semantic memory was deleted.
    MemoryForgotten,
    /// A semantic memory as a snapshot found it.
    MemoryObserved,
}

impl EventKind {
    /// The payment kinds, in declaration order.
    pub const PAYMENTS: [EventKind; 6] = [
        EventKind::PaymentRequested,
        EventKind::PaymentConfirmed,
        EventKind::PaymentFailed,
        EventKind::PaymentUpdated,
        EventKind::PaymentDeleted,
        EventKind::PaymentObserved,
    ];

    /// The agent-memory kinds, in declaration order.
    pub const MEMORY: [EventKind; 18] = [
        EventKind::ThreadStarted,
        EventKind::MessagesAppended,
        EventKind::ThreadSummarized,
        EventKind::ThreadUpdated,
        EventKind::ThreadExpired,
        EventKind::ThreadDeleted,
        EventKind::ThreadObserved,
        EventKind::EpisodeRecorded,
        EventKind::EpisodeAmended,
        EventKind::EpisodePurged,
        EventKind::EpisodeObserved,
        EventKind::MemoryLearned,
        EventKind::MemoryRecalled,
        EventKind::MemoryDecayed,
        EventKind::MemoryRevised,
        EventKind::MemoryUpdated,
        EventKind::MemoryForgotten,
        EventKind::MemoryObserved,
    ];

    /// Every kind, in declaration order (so `ALL[kind.index()] == kind`).
    pub const ALL: [EventKind; 24] = {
        const P: usize = EventKind::PAYMENTS.len();
        let mut all = [EventKind::PaymentRequested; 24];
        let mut i = 0;
        while i < P {
            all[i] = EventKind::PAYMENTS[i];
            i += 1;
        }
        while i < all.len() {
            all[i] = EventKind::MEMORY[i - P];
            i += 1;
        }
        all
    };

    /// Position in [`EventKind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Name used in `[routes]`, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::PaymentRequested => "payment_requested",
            EventKind::PaymentConfirmed => "payment_confirmed",
            EventKind::PaymentFailed => "payment_failed",
            EventKind::PaymentUpdated => "payment_updated",
            EventKind::PaymentDeleted => "payment_deleted",
            EventKind::PaymentObserved => "payment_observed",
            EventKind::ThreadStarted => "thread_started",
            EventKind::MessagesAppended => "messages_appended",
            EventKind::ThreadSummarized => "thread_summarized",
            EventKind::ThreadUpdated => "thread_updated",
            EventKind::ThreadExpired => "thread_expired",
            EventKind::ThreadDeleted => "thread_deleted",
            EventKind::ThreadObserved => "thread_observed",
            EventKind::EpisodeRecorded => "episode_recorded",
            EventKind::EpisodeAmended => "episode_amended",
            EventKind::EpisodePurged => "episode_purged",
            EventKind::EpisodeObserved => "episode_observed",
            EventKind::MemoryLearned => "memory_learned",
            EventKind::MemoryRecalled => "memory_recalled",
            EventKind::MemoryDecayed => "memory_decayed",
            EventKind::MemoryRevised => "memory_revised",
            EventKind::MemoryUpdated => "memory_updated",
            EventKind::MemoryForgotten => "memory_forgotten",
            EventKind::MemoryObserved => "memory_observed",
        }
    }

    /// Whether the kind belongs to the payments domain.
    pub const fn is_payment(self) -> bool {
        self.index() < EventKind::PAYMENTS.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_names_are_unique() {
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert!(EventKind::PaymentDeleted.is_payment());
        assert!(!EventKind::ThreadStarted.is_payment());
    }
}

//! Snapshot chunks in the ordered flow. A chunk is read at the stream's position T while
//! the stream goes on; when it arrives, the documents whose keys changed since the read
//! was asked for are dropped (their change, already dispatched, carries a state at least
//! as new), and the rest enter the flow there, ordered in their keys' lanes behind every
//! change dispatched before. So no snapshot record is older than a change before it. The
//! checkpoint waits for a chunk like for a change; once it is delivered, the core says so.

use std::collections::HashSet;
use std::time::Instant;

use super::{Action, Core};
use crate::pipeline::acker::Tickets;

/// A snapshot read asked for: the point of the stream it was asked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    id: u64,
    from: u64,
}

impl<P, J> Core<P, J> {
    /// A snapshot read is about to be asked for: from now, the keys of changes read are
    /// kept until [`Core::close_window`].
    pub fn open_window(&mut self) -> Window {
        self.next_window += 1;
        let window = Window {
            id: self.next_window,
            from: self.acker.tracked(),
        };
        self.windows.push(window);
        window
    }

    /// Whether keys of changes must be passed to [`Core::touched`] (a read is open).
    pub fn watching(&self) -> bool {
        !self.windows.is_empty()
    }

    /// The change about to be read changes the document `key`.
    pub fn touched(&mut self, key: Box<[u8]>) {
        if self.watching() {
            self.touched.push_back((self.acker.tracked(), key));
        }
    }

    /// The read of `window` arrived: the keys changed since it was asked for, whose
    /// documents the chunk must leave out.
    pub fn close_window(&mut self, window: Window) -> HashSet<Box<[u8]>> {
        let changed = self
            .touched
            .iter()
            .filter(|(seq, _)| *seq >= window.from)
            .map(|(_, key)| key.clone())
            .collect();
        self.windows.retain(|w| w.id != window.id);
        let oldest = self.windows.iter().map(|w| w.from).min();
        match oldest {
            None => self.touched.clear(),
            Some(from) => {
                while self.touched.front().is_some_and(|(seq, _)| *seq < from) {
                    self.touched.pop_front();
                }
            }
        }
        changed
    }

    /// A chunk enters the flow here with `routes` routes in all (one ticket each); the core
    /// says [`Action::Delivered`] with `chunk` once they and everything before finished.
    pub fn chunk(&mut self, chunk: u64, routes: u32, now: Instant) -> Tickets {
        let tickets = self.acker.track_between(routes);
        self.chunks.push_back((self.acker.tracked(), chunk));
        self.settle(now);
        tickets
    }

    /// Reports the chunks released so far.
    pub(super) fn take_delivered(&mut self) {
        let released = self.acker.released();
        while let Some(&(seq, chunk)) = self.chunks.front()
            && seq <= released
        {
            self.chunks.pop_front();
            self.actions.push_back(Action::Delivered { chunk });
        }
    }
}

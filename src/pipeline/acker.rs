//! Ordered completions: events finish their routes in any order, but the checkpoint only
//! moves to the newest position such that it and every earlier position are finished.

use std::collections::VecDeque;

/// One route of one tracked event: [`Acker::track`] issues one per route, and
/// [`Acker::route_done`] consumes it. Neither `Copy` nor `Clone`: a route cannot be
/// completed twice.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket not handed back holds the checkpoint for ever"]
pub(crate) struct Ticket(u64);

/// The tickets of one tracked event, one per route.
#[derive(Debug)]
pub(crate) struct Tickets {
    number: u64,
    left: u32,
}

impl Iterator for Tickets {
    type Item = Ticket;

    fn next(&mut self) -> Option<Ticket> {
        self.left = self.left.checked_sub(1)?;
        Some(Ticket(self.number))
    }
}

/// A completion the acker cannot accept: a bug in the caller, reported, never ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AckError {
    /// The ticket's event already finished all its routes (or was never issued here).
    #[error("ticket {0} is not in flight (issued by another acker, or never issued)")]
    NotInFlight(u64),
}

struct Slot<P> {
    /// None for work between two positions (a snapshot chunk): the checkpoint stays at
    /// the position before it.
    position: Option<P>,
    routes_left: u32,
}

/// Tracks positions in stream order and how many routes each still has to finish.
pub(crate) struct Acker<P> {
    /// Ticket number of `slots[0]`.
    front: u64,
    slots: VecDeque<Slot<P>>,
    /// Newest fully handled position not yet taken by [`Acker::take_advanced`].
    advanced: Option<P>,
}

impl<P> Default for Acker<P> {
    fn default() -> Self {
        Acker {
            front: 0,
            slots: VecDeque::new(),
            advanced: None,
        }
    }
}

impl<P> Acker<P> {
    /// An acker with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the next event of the stream, which must finish `routes` routes: one
    /// ticket each. An event with no route is finished at once (it still waits for the
    /// events before it).
    pub fn track(&mut self, position: P, routes: u32) -> Tickets {
        self.push(Some(position), routes)
    }

    /// Records work that enters the stream here without a position of its own (a
    /// snapshot chunk): later positions wait for it, and releasing it moves nothing.
    pub fn track_between(&mut self, routes: u32) -> Tickets {
        self.push(None, routes)
    }

    fn push(&mut self, position: Option<P>, routes: u32) -> Tickets {
        let number = self.front + self.slots.len() as u64;
        self.slots.push_back(Slot {
            position,
            routes_left: routes,
        });
        self.release();
        Tickets {
            number,
            left: routes,
        }
    }

    /// A position with nothing to handle, such as a quiet stream's post-batch resume token:
    /// the checkpoint reaches it once everything before it is finished.
    pub fn mark(&mut self, position: P) {
        let _none = self.track(position, 0);
    }

    /// One route of `ticket`'s event finished. An error is a ticket of another acker (a
    /// previous session's).
    pub fn route_done(&mut self, ticket: Ticket) -> Result<(), AckError> {
        let slot = ticket
            .0
            .checked_sub(self.front)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get_mut(i))
            .filter(|s| s.routes_left > 0)
            .ok_or(AckError::NotInFlight(ticket.0))?;
        slot.routes_left -= 1;
        self.release();
        Ok(())
    }

    fn release(&mut self) {
        while self.slots.front().is_some_and(|s| s.routes_left == 0) {
            if let Some(slot) = self.slots.pop_front() {
                self.front += 1;
                if slot.position.is_some() {
                    self.advanced = slot.position;
                }
            }
        }
    }

    /// The newest fully handled position, if it moved since the last call.
    pub fn take_advanced(&mut self) -> Option<P> {
        self.advanced.take()
    }

    /// Events (and marks) not yet released.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Events (and marks) released so far: the sequence number just past the newest
    /// position [`Acker::take_advanced`] can return.
    pub fn released(&self) -> u64 {
        self.front
    }

    /// Events (and marks) tracked so far, released or not.
    pub fn tracked(&self) -> u64 {
        self.front + self.slots.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(mut tickets: Tickets) -> Ticket {
        tickets.next().expect("a ticket")
    }

    #[test]
    fn checkpoint_waits_for_the_oldest_unfinished_event() {
        let mut acker = Acker::new();
        let a = one(acker.track("a", 1));
        let mut b = acker.track("b", 2);
        let c = one(acker.track("c", 1));
        acker.route_done(c).unwrap();
        acker.route_done(b.next().unwrap()).unwrap();
        assert_eq!(acker.take_advanced(), None, "a is still running");
        acker.route_done(a).unwrap();
        assert_eq!(acker.take_advanced(), Some("a"), "b has one route left");
        acker.route_done(b.next().unwrap()).unwrap();
        assert!(b.next().is_none(), "one ticket per route");
        assert_eq!(acker.take_advanced(), Some("c"));
        assert_eq!(acker.in_flight(), 0);
        assert_eq!((acker.released(), acker.tracked()), (3, 3));
        assert_eq!(acker.take_advanced(), None, "nothing new");
    }

    #[test]
    fn marks_and_routeless_events_pass_only_behind_earlier_work() {
        let mut acker = Acker::new();
        let a = one(acker.track(1, 1));
        acker.mark(2);
        assert!(acker.track(3, 0).next().is_none(), "no route, no ticket");
        assert_eq!(acker.take_advanced(), None);
        assert_eq!((acker.released(), acker.tracked()), (0, 3));
        acker.route_done(a).unwrap();
        assert_eq!(acker.take_advanced(), Some(3));
        acker.mark(4);
        assert_eq!(
            acker.take_advanced(),
            Some(4),
            "an idle stream advances at once"
        );
    }

    /// A double completion does not compile (the ticket moved); what is left to refuse is
    /// a ticket another acker issued.
    #[test]
    fn tickets_of_another_acker_are_errors() {
        let mut previous = Acker::new();
        let _ = previous.track('x', 0);
        let stale = one(previous.track('y', 1));
        let mut acker = Acker::new();
        let a = one(acker.track('a', 1));
        acker.route_done(a).unwrap();
        assert_eq!(acker.route_done(stale), Err(AckError::NotInFlight(1)));
        assert_eq!(acker.route_done(Ticket(99)), Err(AckError::NotInFlight(99)));
    }

    /// Any completion order: the checkpoint never passes an unfinished event, only moves
    /// forward, and ends at the last event.
    #[test]
    fn random_completion_orders_never_pass_unfinished_work() {
        for seed in 1..200u64 {
            let mut rng = seed;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let n = 50usize;
            let mut acker = Acker::new();
            let mut pending = Vec::new();
            for position in 0..n {
                let routes = (next() % 3) as u32;
                pending.extend(acker.track(position, routes).map(|t| (t, position)));
            }
            let mut finished_routes = vec![0u32; n];
            let mut needed = vec![0u32; n];
            for (_, p) in &pending {
                needed[*p] += 1;
            }
            let mut checkpoint: Option<usize> = None;
            while !pending.is_empty() {
                let i = (next() % pending.len() as u64) as usize;
                let (ticket, position) = pending.swap_remove(i);
                acker.route_done(ticket).unwrap();
                finished_routes[position] += 1;
                if let Some(cp) = acker.take_advanced() {
                    assert!(
                        checkpoint.is_none_or(|old| cp > old),
                        "seed {seed}: moved back"
                    );
                    assert!(
                        (0..=cp).all(|p| finished_routes[p] == needed[p]),
                        "seed {seed}: checkpoint {cp} passed unfinished work"
                    );
                    checkpoint = Some(cp);
                }
            }
            let last_routed = (0..n).rev().find(|&p| needed[p] > 0);
            if last_routed.is_some() {
                assert_eq!(checkpoint, Some(n - 1), "seed {seed}");
            }
            assert_eq!(acker.in_flight(), 0);
        }
    }
}

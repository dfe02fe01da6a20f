//! Spreading the streams across the instances that read them. No coordinator: every
//! instance counts the live readers (`changeflow_runs`) and the live leases each holds,
//! and follows the same two rules ([`may_take`], [`to_give_up`]), so with S streams and
//! N readers each ends up holding ⌊S/N⌋ or ⌈S/N⌉. A joining instance makes the fullest
//! give one stream up at a time (a graceful hand-over: final checkpoint, then the lease
//! released); a leaving one's streams are taken by the emptiest.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::observe::locks::lock;

/// What this instance last learnt of the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Census {
    /// The streams to spread.
    pub streams: usize,
    /// The other live readers, with how many streams each holds.
    pub others: BTreeMap<String, usize>,
}

impl Census {
    fn readers(&self) -> usize {
        self.others.len() + 1
    }

    /// ⌈S/N⌉: nobody holds more.
    fn ceiling(&self) -> usize {
        self.streams.div_ceil(self.readers())
    }

    /// ⌊S/N⌋: nobody stays below it while another holds more.
    fn floor(&self) -> usize {
        self.streams / self.readers()
    }
}

/// Whether an instance holding `mine` streams may take a free one: it is below the
/// ceiling and no other reader holds fewer (the emptiest take first; equals race, and
/// the lease lets one win).
pub(crate) fn may_take(mine: usize, census: &Census) -> bool {
    mine < census.ceiling() && census.others.values().all(|&theirs| theirs >= mine)
}

/// How many streams an instance (`me`, holding `mine`) gives up: all above the ceiling;
/// and one while another reader is below the floor, if it is the fullest (ties: the
/// smallest run id), so that only one gives way at a time.
pub(crate) fn to_give_up(me: &str, mine: usize, census: &Census) -> usize {
    let ceiling = census.ceiling();
    if mine > ceiling {
        return mine - ceiling;
    }
    let floor = census.floor();
    let starved = census.others.values().any(|&theirs| theirs < floor);
    let fullest = census
        .others
        .iter()
        .all(|(id, &theirs)| theirs < mine || (theirs == mine && me < id.as_str()));
    usize::from(starved && mine > floor && fullest)
}

/// This instance's side: the streams it holds (each with the token that hands it over),
/// the takes under way, and the last census.
#[derive(Debug, Default)]
pub(crate) struct Spread {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    census: Census,
    held: BTreeMap<String, CancellationToken>,
    taking: usize,
}

/// A take under way: counted as held until the lease is known ([`Spread::held`]) or the
/// slot is dropped.
pub(crate) struct Slot<'a> {
    spread: &'a Spread,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut inner = lock(&self.spread.inner);
        inner.taking = inner.taking.saturating_sub(1);
    }
}

impl Spread {
    /// A slot to try taking a free stream in, when the rules allow one more.
    pub(crate) fn slot(&self) -> Option<Slot<'_>> {
        let mut inner = lock(&self.inner);
        let mine = inner.held.len() + inner.taking;
        if !may_take(mine, &inner.census) {
            return None;
        }
        inner.taking += 1;
        Some(Slot { spread: self })
    }

    /// `stream`'s lease is held (`slot` used): `hand_over` is cancelled to give it up.
    pub(crate) fn held(&self, slot: Slot<'_>, stream: &str, hand_over: CancellationToken) {
        lock(&self.inner).held.insert(stream.to_owned(), hand_over);
        drop(slot);
    }

    /// `stream`'s lease is no longer held (given up, lost).
    pub(crate) fn let_go(&self, stream: &str) {
        lock(&self.inner).held.remove(stream);
    }

    /// How many streams this instance holds.
    #[cfg(test)]
    fn holding(&self) -> usize {
        lock(&self.inner).held.len()
    }

    /// Takes in `census` and hands over the streams the rules say `me` gives up (the
    /// last in name order); returns their names.
    pub(crate) fn update(&self, me: &str, census: Census) -> Vec<String> {
        let mut inner = lock(&self.inner);
        inner.census = census;
        let n = to_give_up(me, inner.held.len(), &inner.census);
        let given: Vec<String> = inner.held.keys().rev().take(n).cloned().collect();
        for stream in &given {
            if let Some(hand_over) = inner.held.get(stream) {
                hand_over.cancel();
            }
        }
        given
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(streams: usize, others: &[(&str, usize)]) -> Census {
        Census {
            streams,
            others: others
                .iter()
                .map(|(id, n)| ((*id).to_owned(), *n))
                .collect(),
        }
    }

    /// Runs the rules for `ids` to a fixed point (each step: one instance gives up what
    /// it must, then the emptiest takes the free streams) and returns the holdings.
    fn settle(streams: usize, mut held: BTreeMap<String, usize>) -> BTreeMap<String, usize> {
        for _ in 0..100 {
            let before = held.clone();
            let ids: Vec<String> = held.keys().cloned().collect();
            for me in &ids {
                let others: BTreeMap<String, usize> = held
                    .iter()
                    .filter(|(id, _)| *id != me)
                    .map(|(id, n)| (id.clone(), *n))
                    .collect();
                let c = Census { streams, others };
                let give = to_give_up(me, held[me], &c);
                *held.get_mut(me).expect("present") -= give;
            }
            let mut free = streams - held.values().sum::<usize>();
            while free > 0 {
                let taker = ids.iter().find(|me| {
                    let others = held
                        .iter()
                        .filter(|(id, _)| id != me)
                        .map(|(id, n)| (id.clone(), *n))
                        .collect();
                    may_take(held[*me], &Census { streams, others })
                });
                let Some(taker) = taker else { break };
                *held.get_mut(taker).expect("present") += 1;
                free -= 1;
            }
            if held == before {
                return held;
            }
        }
        panic!("no fixed point: {held:?}");
    }

    fn spread_of(held: &BTreeMap<String, usize>) -> (usize, usize) {
        let min = held.values().copied().min().unwrap_or(0);
        let max = held.values().copied().max().unwrap_or(0);
        (min, max)
    }

    #[test]
    fn a_lone_instance_takes_every_stream() {
        let c = census(4, &[]);
        assert!((0..4).all(|mine| may_take(mine, &c)));
        assert!(!may_take(4, &c));
        assert_eq!(to_give_up("a", 4, &c), 0);
    }

    #[test]
    fn the_emptiest_takes_first() {
        let c = census(4, &[("b", 1), ("c", 0)]);
        assert!(!may_take(1, &c), "c holds fewer");
        assert!(may_take(0, &c), "as empty as c: both may race");
        assert!(!may_take(2, &census(4, &[("b", 2)])), "at the ceiling");
    }

    #[test]
    fn a_joining_instance_gets_its_share_one_hand_over_at_a_time() {
        // a holds everything, b joins: a (the fullest) gives up one per round.
        let c = census(4, &[("b", 0)]);
        assert_eq!(to_give_up("a", 4, &c), 2, "above the ceiling of 2");
        let c = census(4, &[("b", 1), ("c", 0)]);
        assert_eq!(to_give_up("a", 3, &c), 1);
        // Two equally full: only the smaller run id gives way.
        let c = census(4, &[("b", 2), ("c", 0)]);
        assert_eq!(to_give_up("a", 2, &c), 1);
        let c = census(4, &[("a", 2), ("c", 0)]);
        assert_eq!(to_give_up("b", 2, &c), 0);
    }

    #[test]
    fn every_start_settles_within_one_of_an_even_share() {
        for streams in 0..9 {
            for readers in 1..5 {
                let ids: Vec<String> = (0..readers).map(|i| format!("r{i}")).collect();
                // Everything on one, then spread evenly, then everything on the last.
                let starts = [
                    ids.iter()
                        .enumerate()
                        .map(|(i, id)| (id.clone(), if i == 0 { streams } else { 0 }))
                        .collect(),
                    ids.iter()
                        .enumerate()
                        .map(|(i, id)| {
                            (
                                id.clone(),
                                streams / readers + usize::from(i < streams % readers),
                            )
                        })
                        .collect(),
                    ids.iter()
                        .enumerate()
                        .map(|(i, id)| (id.clone(), if i + 1 == readers { streams } else { 0 }))
                        .collect(),
                ];
                for start in starts {
                    let settled = settle(streams, start);
                    assert_eq!(
                        settled.values().sum::<usize>(),
                        streams,
                        "{settled:?}: every stream held"
                    );
                    let (min, max) = spread_of(&settled);
                    assert!(
                        max - min <= 1,
                        "{streams} streams, {readers} readers: {settled:?}"
                    );
                    assert!(max <= streams.div_ceil(readers), "{settled:?}");
                }
            }
        }
    }

    #[test]
    fn a_slot_counts_until_the_lease_is_known() {
        let spread = Spread::default();
        spread.update("a", census(2, &[("b", 0)]));
        let first = spread.slot().expect("below the ceiling");
        assert!(spread.slot().is_none(), "b holds fewer than a would");
        drop(first);
        let slot = spread.slot().expect("the failed take gave its slot back");
        let token = CancellationToken::new();
        spread.held(slot, "db1", token.clone());
        assert_eq!(spread.holding(), 1);
        assert_eq!(
            spread.update("a", census(2, &[("b", 0), ("c", 0)])),
            Vec::<String>::new()
        );
        // Three readers of two streams: a holding one is within its share.
        assert!(!token.is_cancelled());
        spread.let_go("db1");
        assert_eq!(spread.holding(), 0);
    }

    #[test]
    fn a_stream_over_the_ceiling_is_handed_over() {
        let spread = Spread::default();
        spread.update("a", census(3, &[]));
        let tokens: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
        for (i, t) in tokens.iter().enumerate() {
            let slot = spread.slot().expect("alone");
            spread.held(slot, &format!("db{i}"), t.clone());
        }
        let given = spread.update("a", census(3, &[("b", 0)]));
        assert_eq!(given, vec!["db2".to_owned()]);
        assert!(tokens[2].is_cancelled() && !tokens[0].is_cancelled());
    }
}

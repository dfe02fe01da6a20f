//! The core's cases, each in microseconds: time is an input, so a fake clock is a number
//! of milliseconds added to one instant.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const LIMITS: Limits = Limits {
    max_in_flight: 4,
    save_every: 2,
    stuck_after: Duration::from_secs(60),
    drain_timeout: Duration::from_secs(10),
};

/// A job as the tests see it: the change it belongs to, its lane, its ticket.
#[derive(Debug)]
struct TestJob {
    change: u64,
    lane: Option<&'static str>,
    ticket: Ticket,
}

impl PartialEq for TestJob {
    fn eq(&self, other: &Self) -> bool {
        (self.change, self.lane) == (other.change, other.lane)
    }
}

/// `count` routes of the change numbered `change` (none when 0).
fn routes(count: usize, change: u64) -> Option<Routes> {
    Some(Routes {
        count: count as u32,
        event_id: EventId::from_token_data(&change.to_string()),
        kind: "payment_requested",
    })
}

struct Harness {
    core: Core<u64, TestJob>,
    start: Instant,
    next: u64,
    running: Vec<TestJob>,
    stores: Vec<(u64, u64)>,
    finished: bool,
    delivered: usize,
    abandoned: Option<usize>,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        Harness {
            core: Core::new(limits, 0),
            start: Instant::now(),
            next: 0,
            running: Vec::new(),
            stores: Vec::new(),
            finished: false,
            delivered: 0,
            abandoned: None,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Reads a change with one job per lane in `lanes` (none: nothing to do).
    fn read(&mut self, lanes: &[&'static str], ms: u64) -> u64 {
        let change = self.next;
        self.next += 1;
        let now = self.at(ms);
        let tickets = self.core.change(change, routes(lanes.len(), change), now);
        for (ticket, lane) in tickets.zip(lanes) {
            self.core.enqueue(
                Some(lane),
                TestJob {
                    change,
                    lane: Some(lane),
                    ticket,
                },
            );
        }
        self.drain_actions();
        change
    }

    fn drain_actions(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Start(job) => self.running.push(job),
                Action::Store {
                    position, sequence, ..
                } => self.stores.push((position, sequence)),
                Action::Abandon { unfinished } => {
                    self.abandoned = Some(unfinished);
                    self.running.clear();
                }
                Action::Delivered { .. } => self.delivered += 1,
                Action::Finished => self.finished = true,
            }
        }
    }

    /// Completes the running job of `change`.
    fn complete(&mut self, change: u64, ms: u64) {
        let i = self
            .running
            .iter()
            .position(|j| j.change == change)
            .unwrap_or_else(|| panic!("change {change} has no running job: {:?}", self.running));
        let job = self.running.remove(i);
        let now = self.at(ms);
        self.core
            .complete(Some(job.ticket), job.lane, now)
            .expect("a ticket of this core");
        self.drain_actions();
    }

    fn store_done(&mut self, ms: u64) {
        if let Some(&(_, sequence)) = self.stores.last() {
            let now = self.at(ms);
            self.core.stored(sequence, now);
            self.drain_actions();
        }
    }

    fn tick(&mut self, ms: u64) -> Report {
        let now = self.at(ms);
        let report = self.core.tick(now);
        self.drain_actions();
        report
    }

    fn running_changes(&self) -> Vec<u64> {
        self.running.iter().map(|j| j.change).collect()
    }
}

#[test]
fn a_keys_changes_run_one_at_a_time_in_order_and_other_keys_run_beside() {
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["a"], 0);
    h.read(&["b"], 0);
    assert_eq!(h.running_changes(), vec![0, 2], "a's second change waits");
    h.complete(0, 1);
    assert_eq!(h.running_changes(), vec![2, 1], "then it starts");
    h.complete(2, 2);
    h.complete(1, 3);
    assert!(h.running.is_empty());
}

#[test]
fn reading_stops_at_the_bound_past_the_stored_checkpoint_and_says_why() {
    let mut h = Harness::new(Limits {
        save_every: 100,
        ..LIMITS
    });
    for _ in 0..4 {
        assert!(h.core.may_read());
        h.read(&["a"], 0);
    }
    assert!(!h.core.may_read(), "4 read past a stored checkpoint at 0");
    assert_eq!(h.core.held_back(), Some(Cause::Handlers));
    h.complete(0, 1);
    // Handled but not stored: reading waits on the store, which was idle, so it gets the
    // newest handled position at once.
    assert_eq!(h.core.held_back(), Some(Cause::Checkpoint));
    assert_eq!(h.stores, vec![(0, 1)]);
    for change in 1..4 {
        h.complete(change, 1);
    }
    assert_eq!(h.stores.len(), 1, "the store is busy with the first");
    h.store_done(2);
    assert!(h.core.may_read(), "one stored: one more may be read");
    assert_eq!(h.core.held_back(), None);
    h.tick(3);
    assert_eq!(h.stores.last(), Some(&(3, 4)), "the rest on the clock");
}

#[test]
fn the_checkpoint_never_passes_an_unfinished_change() {
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["b"], 0);
    h.read(&[], 0);
    h.complete(1, 1);
    h.tick(2);
    assert!(h.stores.is_empty(), "change 0 still runs: {:?}", h.stores);
    h.complete(0, 3);
    h.tick(4);
    assert_eq!(h.stores, vec![(2, 3)], "0, 1 and the routeless 2");
    h.tick(5);
    assert_eq!(h.stores.len(), 1, "nothing new, nothing stored");
}

#[test]
fn a_checkpoint_is_handed_on_every_save_every_changes_and_on_the_clock() {
    let mut h = Harness::new(Limits {
        save_every: 2,
        max_in_flight: 100,
        ..LIMITS
    });
    h.read(&[], 0);
    assert!(h.stores.is_empty());
    h.read(&[], 0);
    assert_eq!(h.stores, vec![(1, 2)], "after two changes");
    h.read(&[], 0);
    h.tick(1);
    assert_eq!(h.stores.last(), Some(&(2, 3)), "on the clock");
    h.core.mark(3, h.at(2));
    h.tick(3);
    assert_eq!(
        h.stores.last(),
        Some(&(3, 4)),
        "a quiet stream's mark advances it"
    );
    assert_eq!(h.core.events(), 3, "marks are not changes");
}

#[test]
fn a_stop_drains_running_and_queued_jobs_then_finishes() {
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["a"], 0);
    h.core.stop(h.at(1));
    h.drain_actions();
    assert!(!h.core.may_read());
    assert!(!h.finished);
    h.complete(0, 2);
    assert_eq!(
        h.running_changes(),
        vec![1],
        "the queued job runs within the drain"
    );
    h.complete(1, 3);
    assert!(h.finished);
    assert_eq!(
        h.stores.last(),
        Some(&(1, 2)),
        "the final checkpoint covers both"
    );
}

#[test]
fn a_stop_abandons_what_still_runs_at_its_deadline() {
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["b"], 0);
    h.complete(1, 1);
    h.core.stop(h.at(1_000));
    h.drain_actions();
    h.tick(10_999);
    assert!(!h.finished, "within the drain timeout");
    h.tick(11_000);
    assert_eq!(h.abandoned, Some(2), "change 0 and the handled 1 behind it");
    assert!(h.finished);
    assert!(
        h.stores.iter().all(|(position, _)| *position < 1),
        "nothing past the abandoned change: {:?}",
        h.stores
    );
}

#[test]
fn a_job_that_does_not_finish_keeps_its_lane() {
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["a"], 0);
    let failed = h.running.remove(0);
    h.core
        .complete(None, failed.lane, h.at(1))
        .expect("no ticket, nothing to refuse");
    h.drain_actions();
    assert!(h.running.is_empty(), "a's next change must not overtake it");
    h.core.stop(h.at(2));
    h.drain_actions();
    assert!(h.finished, "nothing runs: the stop finishes");
    assert!(h.stores.is_empty(), "nothing handled, nothing stored");
}

#[test]
fn a_stop_with_nothing_running_finishes_at_once() {
    let mut h = Harness::new(LIMITS);
    h.read(&[], 0);
    h.core.stop(h.at(1));
    h.drain_actions();
    assert!(h.finished);
    assert_eq!(h.stores, vec![(0, 1)]);
}

#[test]
fn a_checkpoint_that_cannot_be_stored_is_reported_stuck_until_one_is() {
    let mut h = Harness::new(LIMITS);
    h.read(&[], 0);
    h.read(&[], 0);
    assert_eq!(h.stores.len(), 1);
    h.core.store_failed("not primary".to_owned());
    let report = h.tick(59_999);
    assert!(!report.checkpoint_stuck);
    let report = h.tick(60_000);
    assert!(report.checkpoint_stuck);
    assert_eq!(
        report.checkpoint_wait,
        Some((Duration::from_secs(60), Some("not primary".to_owned())))
    );
    h.store_done(60_001);
    let report = h.tick(60_002);
    assert!(!report.checkpoint_stuck);
    assert_eq!(report.checkpoint_wait, None);
}

#[test]
fn a_chunk_leaves_out_keys_changed_since_its_read_and_holds_the_checkpoint_until_delivered() {
    let mut core: Core<u64, u32> = Core::new(LIMITS, 0);
    let now = Instant::now();
    let mut first = core.change(0, routes(1, 0), now);
    let window = core.open_window();
    assert!(core.watching());
    // Read while the chunk's read runs: key b changed, so its snapshot record would be older.
    core.touched(b"b".to_vec().into_boxed_slice());
    let _none = core.change(1, None, now);
    let changed = core.close_window(window);
    assert!(!core.watching());
    assert_eq!(changed.len(), 1);
    assert!(changed.contains(&b"b".to_vec().into_boxed_slice()));
    // The chunk enters after change 1; its two records finish before change 0 does.
    let mut tickets = core.chunk(7, 2, now);
    let _none = core.change(2, None, now);
    for ticket in [tickets.next(), tickets.next()].into_iter().flatten() {
        core.complete(Some(ticket), None, now).expect("in flight");
    }
    let mut actions: Vec<Action<u64, u32>> = std::iter::from_fn(|| core.poll_action()).collect();
    let delivered = |actions: &[Action<u64, u32>]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Delivered { chunk: 7 }))
            .count()
    };
    assert_eq!(delivered(&actions), 0, "change 0 before it is unfinished");
    let ticket = first.next().expect("ticket");
    core.complete(Some(ticket), None, now).expect("in flight");
    core.tick(now + Duration::from_secs(2));
    actions.extend(std::iter::from_fn(|| core.poll_action()));
    assert_eq!(delivered(&actions), 1);
    let stored: Vec<u64> = actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Store { position, .. } => Some(position),
            _ => None,
        })
        .collect();
    assert_eq!(
        stored.last(),
        Some(&2),
        "the chunk has no position of its own"
    );
}

#[test]
fn keys_touched_before_a_window_opened_do_not_drop_documents() {
    let mut core: Core<u64, u32> = Core::new(LIMITS, 0);
    let now = Instant::now();
    let early = core.open_window();
    core.touched(b"a".to_vec().into_boxed_slice());
    let _none = core.change(0, None, now);
    let late = core.open_window();
    core.touched(b"c".to_vec().into_boxed_slice());
    let _none = core.change(1, None, now);
    assert_eq!(core.close_window(early).len(), 2);
    let changed = core.close_window(late);
    assert_eq!(
        changed.len(),
        1,
        "a was changed before the late read was asked for"
    );
    assert!(changed.contains(&b"c".to_vec().into_boxed_slice()));
}

#[test]
fn a_lost_lease_stops_at_once_and_stores_nothing_more() {
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["b"], 0);
    h.complete(1, 1);
    h.core.lease_lost(h.at(2));
    h.drain_actions();
    assert_eq!(h.abandoned, Some(2), "both changes' work is dropped");
    assert!(h.finished);
    assert!(!h.core.may_read(), "reading stops");
    let stores = h.stores.len();
    // A late completion and the clock hand nothing to the store any more.
    let _ = h.core.complete(None, Some("a"), h.at(3));
    h.tick(5_000);
    assert_eq!(
        h.stores.len(),
        stores,
        "nothing stored after the lease is lost"
    );
}

#[test]
fn history_lost_follows_the_streams_policy_and_always_fails_a_replay() {
    use crate::config::HistoryLostPolicy::{Fail, Resnapshot, RestartFromNow};
    use crate::config::SnapshotMode::{Initial, Never, WhenNeeded};
    let cases = [
        (Fail, WhenNeeded, false, OnLost::Fail),
        (RestartFromNow, Never, false, OnLost::RestartFromNow),
        (RestartFromNow, Initial, false, OnLost::RestartFromNow),
        (RestartFromNow, WhenNeeded, false, OnLost::Resnapshot),
        (Resnapshot, Never, false, OnLost::Resnapshot),
        // A replay asked for that very history: continuing from now would fake it.
        (RestartFromNow, Never, true, OnLost::Fail),
        (Resnapshot, WhenNeeded, true, OnLost::Fail),
    ];
    for (policy, mode, replay, expected) in cases {
        assert_eq!(
            on_history_lost(policy, mode, replay),
            expected,
            "{policy:?} {mode:?} {replay}"
        );
    }
}

#[test]
fn a_change_whose_job_does_not_finish_is_reported_stuck_with_its_id() {
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["b"], 10_000);
    h.complete(1, 10_001);
    let report = h.tick(30_000);
    assert_eq!(
        report.oldest.map(|o| (o.waited, o.event_id)),
        Some((Duration::from_secs(30), EventId::from_token_data("0")))
    );
    assert!(!report.handlers_stuck);
    let report = h.tick(60_000);
    assert!(report.handlers_stuck);
    assert_eq!(report.oldest.map(|o| o.kind), Some("payment_requested"));
    h.complete(0, 60_001);
    let report = h.tick(60_002);
    assert_eq!((report.oldest, report.handlers_stuck), (None, false));
}

#[test]
fn a_ticket_of_an_earlier_session_is_refused() {
    let mut old = Harness::new(LIMITS);
    old.read(&["a"], 0);
    let stale = old.running.remove(0);
    let mut h = Harness::new(LIMITS);
    h.read(&["a"], 0);
    h.read(&["a"], 0);
    h.read(&["a"], 0);
    // Ticket 0 of this core is live; the stale one names 0 too, so it is accepted as 0's:
    // tickets are per session, and a session's jobs never outlive it.
    let refused = Core::<u64, TestJob>::new(LIMITS, 0).complete(Some(stale.ticket), None, h.at(0));
    assert!(refused.is_err());
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    /// Read a change with jobs in these lanes (0..3 of 3 keys).
    Read(Vec<u8>),
    /// Complete the i-th running job (modulo how many run).
    Complete(usize),
    /// The store stores the newest handed checkpoint.
    Stored,
    /// The store fails.
    Failed,
    /// The clock moves on by this many ms and ticks.
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => proptest::collection::vec(0u8..3, 0..3).prop_map(Step::Read),
        4 => any::<usize>().prop_map(Step::Complete),
        1 => Just(Step::Stored),
        1 => Just(Step::Failed),
        1 => (0u64..2_000).prop_map(Step::Tick),
    ]
}

const LANES: [&str; 3] = ["k0", "k1", "k2"];

/// A job of the property test: (change, its n-th route).
type ModelJob = (u64, usize);

/// What the property test knows besides the core, and the checks on every action.
#[derive(Default)]
struct Model {
    next: u64,
    /// Per change: jobs not yet completed.
    open: BTreeMap<u64, usize>,
    tickets: BTreeMap<ModelJob, Ticket>,
    lane_of: BTreeMap<ModelJob, &'static str>,
    started: BTreeSet<ModelJob>,
    running: Vec<ModelJob>,
    last_started: BTreeMap<&'static str, u64>,
    busy: BTreeSet<&'static str>,
    /// Checkpoints handed to the store: (position, sequence).
    handed: Vec<(u64, u64)>,
    stored: u64,
    finished: bool,
}

impl Model {
    /// Takes the core's actions, checking each.
    fn act(&mut self, core: &mut Core<u64, ModelJob>) -> Result<(), TestCaseError> {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Start(job) => {
                    prop_assert!(self.started.insert(job), "{job:?} started twice");
                    let lane = self.lane_of[&job];
                    prop_assert!(self.busy.insert(lane), "two jobs of {lane} at once");
                    if let Some(prev) = self.last_started.insert(lane, job.0) {
                        prop_assert!(prev < job.0, "{lane}: {} after {prev}", job.0);
                    }
                    self.running.push(job);
                }
                Action::Store {
                    position, sequence, ..
                } => {
                    prop_assert!(
                        self.open.range(..=position).all(|(_, left)| *left == 0),
                        "checkpoint {position} passes unfinished work: {:?}",
                        self.open
                    );
                    if let Some((last, _)) = self.handed.last() {
                        prop_assert!(position > *last, "moved back");
                    }
                    self.handed.push((position, sequence));
                }
                Action::Abandon { .. } => self.running.clear(),
                Action::Delivered { chunk } => prop_assert!(false, "chunk {chunk} never entered"),
                Action::Finished => self.finished = true,
            }
        }
        Ok(())
    }

    /// Reads a change with jobs in `lanes` (distinct).
    fn read(&mut self, core: &mut Core<u64, ModelJob>, lanes: &[u8], now: Instant) {
        let change = self.next;
        self.next += 1;
        self.open.insert(change, lanes.len());
        let tickets = core.change(change, routes(lanes.len(), change), now);
        for (i, (ticket, lane)) in tickets.zip(lanes).enumerate() {
            self.tickets.insert((change, i), ticket);
            self.lane_of.insert((change, i), LANES[usize::from(*lane)]);
            core.enqueue(Some(LANES[usize::from(*lane)]), (change, i));
        }
    }

    /// Completes the i-th running job.
    fn complete(
        &mut self,
        core: &mut Core<u64, ModelJob>,
        i: usize,
        now: Instant,
    ) -> Result<(), TestCaseError> {
        let job = self.running.remove(i % self.running.len());
        let lane = self.lane_of[&job];
        self.busy.remove(lane);
        if let Some(left) = self.open.get_mut(&job.0) {
            *left -= 1;
        }
        let ticket = self.tickets.remove(&job);
        prop_assert!(core.complete(ticket, Some(lane), now).is_ok());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Random interleavings of changes, completions, store results and ticks, then a stop:
    /// a checkpoint handed to the store never passes a change with a job not completed,
    /// never moves back; every job starts exactly once; a key's jobs start in read order,
    /// never two at once; reading never runs more than the bound past the stored
    /// checkpoint.
    #[test]
    fn the_checkpoint_never_passes_unfinished_work_and_each_job_starts_once(
        steps in proptest::collection::vec(step(), 1..200),
        max_in_flight in 1u64..8,
        save_every in 1u64..5,
    ) {
        let limits = Limits { max_in_flight, save_every, ..LIMITS };
        let mut core: Core<u64, ModelJob> = Core::new(limits, 0);
        let mut now = Instant::now();
        let mut model = Model::default();
        for s in steps {
            match s {
                Step::Read(mut lanes) => {
                    if !core.may_read() {
                        continue;
                    }
                    // A change's jobs are in different lanes (or none).
                    lanes.sort_unstable();
                    lanes.dedup();
                    model.read(&mut core, &lanes, now);
                    prop_assert!(core.acker.tracked() - model.stored <= max_in_flight);
                }
                Step::Complete(i) => {
                    if !model.running.is_empty() {
                        model.complete(&mut core, i, now)?;
                    }
                }
                Step::Stored => {
                    if let Some(&(_, sequence)) = model.handed.last() {
                        model.stored = model.stored.max(sequence);
                        core.stored(sequence, now);
                    }
                }
                Step::Failed => core.store_failed("down".to_owned()),
                Step::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    core.tick(now);
                }
            }
            model.act(&mut core)?;
        }
        // Stop, complete everything that runs, and the core finishes.
        core.stop(now);
        model.act(&mut core)?;
        while !model.running.is_empty() {
            model.complete(&mut core, 0, now)?;
            model.act(&mut core)?;
        }
        prop_assert!(model.finished, "a drained stop finishes");
        prop_assert!(model.open.values().all(|left| *left == 0), "every job ran: {:?}", model.open);
        if model.next > 0 {
            prop_assert_eq!(model.handed.last().map(|(p, _)| *p), Some(model.next - 1));
        }
    }
}

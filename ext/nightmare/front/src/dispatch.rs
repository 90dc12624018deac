//! Caps the requests in flight to the workers at a few per worker and
//! queues the rest, first come first served, across all loop threads. The
//! cap keeps a worker's accept queue from running dry (each finds its next
//! request already waiting) while the queue stays here, where the front
//! knows how long a request waited and when every worker is busy.
//!
//! A slot is held by a `Slot` value and given back when it is dropped, so no
//! path through a connection's life can leak one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Identifies a queued connection: its loop, its slab slot, and a serial that
/// tells it apart from a later connection reusing the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub loop_index: usize,
    pub slot: usize,
    pub serial: u64,
}

/// Where grants are delivered: the loop that owns the waiter.
pub trait GrantSink: Send + Sync {
    fn deliver(&self, waiter: Waiter);
}

#[derive(Debug, Default)]
struct State {
    workers: usize,
    in_flight: usize,
    queue: VecDeque<Waiter>,
    /// The workers' accept queue was found full: grant nothing more until a
    /// request in flight ends and makes room.
    held_back: bool,
}

/// How many requests may be in flight per worker, and queued in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchLimits {
    pub per_worker: usize,
    pub max_queued: usize,
}

pub struct Dispatcher {
    state: Mutex<State>,
    limits: DispatchLimits,
    sink: Box<dyn GrantSink>,
}

/// Permission to have one request in flight.
pub struct Slot {
    dispatcher: Arc<Dispatcher>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.dispatcher.release();
    }
}

impl Slot {
    /// The workers' accept queue was full: the waiter goes back to the head
    /// of the queue, and its slot is held back (not granted to anyone) until
    /// a request in flight ends.
    pub fn requeue_at_head(self, waiter: Waiter) {
        let dispatcher = Arc::clone(&self.dispatcher);
        std::mem::forget(self);
        let mut state = dispatcher.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.queue.push_front(waiter);
        state.held_back = true;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchStats {
    pub workers: usize,
    pub limit: usize,
    pub in_flight: usize,
    pub queued: usize,
}

pub enum Admission {
    Granted(Slot),
    Queued,
    /// The queue is at its cap.
    Full,
}

impl Dispatcher {
    pub fn new(workers: usize, limits: DispatchLimits, sink: Box<dyn GrantSink>) -> Arc<Self> {
        Arc::new(Dispatcher { state: Mutex::new(State { workers, ..State::default() }), limits, sink })
    }

    fn limit(&self, state: &State) -> usize {
        state.workers.saturating_mul(self.limits.per_worker)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counts that are
        // still the best information there is.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot now if one is free and nobody is ahead in the queue; otherwise
    /// the waiter joins the queue and later gets a grant through the sink.
    pub fn admit(self: &Arc<Self>, waiter: Waiter) -> Admission {
        let mut state = self.lock();
        if state.in_flight < self.limit(&state) && state.queue.is_empty() && !state.held_back {
            state.in_flight += 1;
            Admission::Granted(Slot { dispatcher: Arc::clone(self) })
        } else if state.queue.len() >= self.limits.max_queued {
            Admission::Full
        } else {
            state.queue.push_back(waiter);
            Admission::Queued
        }
    }

    /// Turns a delivered grant into the slot it stands for.
    pub fn claim(self: &Arc<Self>) -> Slot {
        Slot { dispatcher: Arc::clone(self) }
    }

    /// Removes a waiter that gave up. `false` means it was no longer queued:
    /// a grant for it is on its way and will be released by its receiver.
    pub fn cancel(&self, waiter: Waiter) -> bool {
        let mut state = self.lock();
        match state.queue.iter().position(|queued| *queued == waiter) {
            Some(index) => {
                state.queue.remove(index);
                true
            }
            None => false,
        }
    }

    pub fn set_worker_count(&self, workers: usize) {
        let granted = {
            let mut state = self.lock();
            state.workers = workers;
            self.grant_free_slots(&mut state)
        };
        granted.into_iter().for_each(|waiter| self.sink.deliver(waiter));
    }

    /// A full accept queue with nothing in flight has no release coming to
    /// lift the hold (strangers filled it, or the workers were replaced):
    /// the loops call this on their tick.
    pub fn retry_if_stuck(&self) {
        let granted = {
            let mut state = self.lock();
            if !state.held_back || state.in_flight > 0 {
                return;
            }
            state.held_back = false;
            self.grant_free_slots(&mut state)
        };
        granted.into_iter().for_each(|waiter| self.sink.deliver(waiter));
    }

    pub fn stats(&self) -> DispatchStats {
        let state = self.lock();
        DispatchStats {
            workers: state.workers,
            limit: self.limit(&state),
            in_flight: state.in_flight,
            queued: state.queue.len(),
        }
    }

    fn release(&self) {
        let granted = {
            let mut state = self.lock();
            debug_assert!(state.in_flight > 0, "a slot was released twice");
            state.in_flight = state.in_flight.saturating_sub(1);
            // A request ended, so the accept queue has room again.
            state.held_back = false;
            self.grant_free_slots(&mut state)
        };
        granted.into_iter().for_each(|waiter| self.sink.deliver(waiter));
    }

    fn grant_free_slots(&self, state: &mut State) -> Vec<Waiter> {
        let mut granted = Vec::new();
        while state.in_flight < self.limit(state) && !state.held_back {
            let Some(waiter) = state.queue.pop_front() else {
                break;
            };
            state.in_flight += 1;
            granted.push(waiter);
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Waiter>>);

    impl GrantSink for Arc<Recorder> {
        fn deliver(&self, waiter: Waiter) {
            self.0.lock().unwrap().push(waiter);
        }
    }

    fn waiter(slot: usize) -> Waiter {
        Waiter { loop_index: 0, slot, serial: slot as u64 }
    }

    fn setup(workers: usize) -> (Arc<Dispatcher>, Arc<Recorder>) {
        setup_with(workers, DispatchLimits { per_worker: 1, max_queued: 100 })
    }

    fn setup_with(workers: usize, limits: DispatchLimits) -> (Arc<Dispatcher>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (Dispatcher::new(workers, limits, Box::new(Arc::clone(&recorder))), recorder)
    }

    #[test]
    fn never_more_in_flight_than_the_limit_and_fifo_after() {
        let (dispatcher, recorder) = setup(2);
        let first = dispatcher.admit(waiter(1));
        let second = dispatcher.admit(waiter(2));
        assert!(matches!(first, Admission::Granted(_)));
        assert!(matches!(second, Admission::Granted(_)));
        for slot in 3..6 {
            assert!(matches!(dispatcher.admit(waiter(slot)), Admission::Queued));
        }
        assert_eq!(dispatcher.stats(), DispatchStats { workers: 2, limit: 2, in_flight: 2, queued: 3 });

        drop(first);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(3)]);
        assert_eq!(dispatcher.stats().in_flight, 2, "the grant holds the freed slot");
        drop(second);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(3), waiter(4)]);
    }

    #[test]
    fn newcomers_do_not_jump_the_queue() {
        let (dispatcher, _recorder) = setup(1);
        let held = dispatcher.admit(waiter(1));
        assert!(matches!(dispatcher.admit(waiter(2)), Admission::Queued));
        dispatcher.set_worker_count(1);
        drop(held); // grants waiter 2
        assert!(matches!(dispatcher.admit(waiter(3)), Admission::Queued));
    }

    #[test]
    fn cancelled_waiters_are_skipped_and_late_cancels_say_so() {
        let (dispatcher, recorder) = setup(1);
        let held = dispatcher.admit(waiter(1));
        assert!(matches!(dispatcher.admit(waiter(2)), Admission::Queued));
        assert!(matches!(dispatcher.admit(waiter(3)), Admission::Queued));
        assert!(dispatcher.cancel(waiter(2)));
        drop(held);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(3)]);
        assert!(!dispatcher.cancel(waiter(3)), "already granted");
        drop(dispatcher.claim());
        assert_eq!(dispatcher.stats().in_flight, 0);
    }

    #[test]
    fn raising_the_limit_grants_waiters_and_zero_holds_everyone() {
        let (dispatcher, recorder) = setup(0);
        for slot in 1..4 {
            assert!(matches!(dispatcher.admit(waiter(slot)), Admission::Queued));
        }
        dispatcher.set_worker_count(2);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(1), waiter(2)]);
        assert_eq!(dispatcher.stats().queued, 1);
    }

    #[test]
    fn the_cap_is_per_worker_and_a_full_queue_says_so() {
        let (dispatcher, _recorder) = setup_with(2, DispatchLimits { per_worker: 3, max_queued: 2 });
        let held: Vec<_> = (0..6).map(|slot| dispatcher.admit(waiter(slot))).collect();
        assert!(held.iter().all(|admission| matches!(admission, Admission::Granted(_))));
        assert!(matches!(dispatcher.admit(waiter(6)), Admission::Queued));
        assert!(matches!(dispatcher.admit(waiter(7)), Admission::Queued));
        assert!(matches!(dispatcher.admit(waiter(8)), Admission::Full));
        assert_eq!(dispatcher.stats(), DispatchStats { workers: 2, limit: 6, in_flight: 6, queued: 2 });
    }

    #[test]
    fn a_full_accept_queue_holds_grants_back_until_a_request_ends() {
        let (dispatcher, recorder) = setup(2);
        let Admission::Granted(first) = dispatcher.admit(waiter(1)) else { panic!("a free slot") };
        let Admission::Granted(second) = dispatcher.admit(waiter(2)) else { panic!("a free slot") };
        second.requeue_at_head(waiter(2));
        assert!(matches!(dispatcher.admit(waiter(3)), Admission::Queued), "a slot is free but held back");
        assert_eq!(dispatcher.stats().in_flight, 1);
        dispatcher.retry_if_stuck();
        assert!(recorder.0.lock().unwrap().is_empty(), "a release is still coming");

        drop(first);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(2), waiter(3)], "the requeued waiter goes first");
    }

    #[test]
    fn a_hold_with_nothing_in_flight_is_lifted_by_the_tick() {
        let (dispatcher, recorder) = setup(1);
        let Admission::Granted(slot) = dispatcher.admit(waiter(1)) else { panic!("a free slot") };
        slot.requeue_at_head(waiter(1));
        assert!(recorder.0.lock().unwrap().is_empty());
        dispatcher.retry_if_stuck();
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(1)]);
    }
}

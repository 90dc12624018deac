//! Keeps at most one request in flight per worker and queues the rest,
//! first come first served, across all loop threads. Knowing the queue is
//! what lets the front say how long a request waited, and tell when every
//! worker is busy.
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
    limit: usize,
    in_flight: usize,
    queue: VecDeque<Waiter>,
}

pub struct Dispatcher {
    state: Mutex<State>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchStats {
    pub limit: usize,
    pub in_flight: usize,
    pub queued: usize,
}

pub enum Admission {
    Granted(Slot),
    Queued,
}

impl Dispatcher {
    pub fn new(limit: usize, sink: Box<dyn GrantSink>) -> Arc<Self> {
        Arc::new(Dispatcher { state: Mutex::new(State { limit, ..State::default() }), sink })
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
        if state.in_flight < state.limit && state.queue.is_empty() {
            state.in_flight += 1;
            Admission::Granted(Slot { dispatcher: Arc::clone(self) })
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

    pub fn set_limit(&self, limit: usize) {
        let granted = {
            let mut state = self.lock();
            state.limit = limit;
            Self::grant_free_slots(&mut state)
        };
        granted.into_iter().for_each(|waiter| self.sink.deliver(waiter));
    }

    pub fn stats(&self) -> DispatchStats {
        let state = self.lock();
        DispatchStats { limit: state.limit, in_flight: state.in_flight, queued: state.queue.len() }
    }

    fn release(&self) {
        let granted = {
            let mut state = self.lock();
            debug_assert!(state.in_flight > 0, "a slot was released twice");
            state.in_flight = state.in_flight.saturating_sub(1);
            Self::grant_free_slots(&mut state)
        };
        granted.into_iter().for_each(|waiter| self.sink.deliver(waiter));
    }

    fn grant_free_slots(state: &mut State) -> Vec<Waiter> {
        let mut granted = Vec::new();
        while state.in_flight < state.limit {
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

    fn setup(limit: usize) -> (Arc<Dispatcher>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (Dispatcher::new(limit, Box::new(Arc::clone(&recorder))), recorder)
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
        assert_eq!(dispatcher.stats(), DispatchStats { limit: 2, in_flight: 2, queued: 3 });

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
        dispatcher.set_limit(1);
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
        dispatcher.set_limit(2);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(1), waiter(2)]);
        assert_eq!(dispatcher.stats().queued, 1);
    }
}

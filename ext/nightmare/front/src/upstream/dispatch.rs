//! Caps the requests in flight to the workers at a few per worker and
//! queues the rest, first come first served, across all loop threads. The
//! cap keeps a worker's accept queue from running dry (each finds its next
//! request already waiting) while the queue stays here, where the front
//! knows how long a request waited and when every worker is busy.
//!
//! Room for a request in flight is held by an `InFlight` value, and a place
//! in the queue by a `QueuePlace`; each is given back when dropped, so no
//! path through a connection's life can leak one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::mailbox::{ConnectionId, Mailboxes};

/// Where grants are delivered: the loop of the connection that waits.
pub trait GrantSink: Send + Sync {
    fn deliver(&self, waiter: ConnectionId);
}

impl GrantSink for Arc<Mailboxes> {
    fn deliver(&self, waiter: ConnectionId) {
        self.post_grant(waiter);
    }
}

#[derive(Debug, Default)]
struct State {
    workers: usize,
    in_flight: usize,
    queue: VecDeque<ConnectionId>,
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

/// Room for one request in flight to the workers.
pub struct InFlight {
    dispatcher: Arc<Dispatcher>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.dispatcher.release();
    }
}

impl InFlight {
    /// The workers' accept queue was full: the waiter goes back to the head
    /// of the queue, and its room is held back (granted to no one) until a
    /// request in flight ends.
    pub fn requeue_at_head(self, waiter: ConnectionId) -> QueuePlace {
        let dispatcher = Arc::clone(&self.dispatcher);
        std::mem::forget(self);
        let mut state = dispatcher.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.queue.push_front(waiter);
        state.held_back = true;
        drop(state);
        QueuePlace { dispatcher, waiter: Some(waiter) }
    }
}

/// A connection's place in the queue: dropping it leaves the queue (a
/// client gone, a queue_timeout), so a worker is never granted to nobody.
pub struct QueuePlace {
    dispatcher: Arc<Dispatcher>,
    waiter: Option<ConnectionId>,
}

impl std::fmt::Debug for QueuePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueuePlace")
    }
}

impl QueuePlace {
    /// The grant came: the place was already taken out of the queue.
    pub fn granted(mut self) -> InFlight {
        self.waiter = None;
        InFlight { dispatcher: Arc::clone(&self.dispatcher) }
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        // Not found means a grant is on its way; its receiver, finding no
        // one waiting, gives the room back.
        if let Some(waiter) = self.waiter {
            self.dispatcher.cancel(waiter);
        }
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
    Granted(InFlight),
    Queued(QueuePlace),
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

    /// Room now if some is free and nobody is ahead in the queue; otherwise
    /// the waiter joins the queue and later gets a grant through the sink.
    pub fn admit(self: &Arc<Self>, waiter: ConnectionId) -> Admission {
        let mut state = self.lock();
        if state.in_flight < self.limit(&state) && state.queue.is_empty() && !state.held_back {
            state.in_flight += 1;
            Admission::Granted(InFlight { dispatcher: Arc::clone(self) })
        } else if state.queue.len() >= self.limits.max_queued {
            Admission::Full
        } else {
            state.queue.push_back(waiter);
            Admission::Queued(QueuePlace { dispatcher: Arc::clone(self), waiter: Some(waiter) })
        }
    }

    /// A grant that reached no waiting connection (it left, or its place
    /// was dropped just as the grant came): the room goes to the next one.
    pub fn release_undelivered(self: &Arc<Self>) {
        drop(InFlight { dispatcher: Arc::clone(self) });
    }

    /// Removes a waiter that gave up. `false` means it was no longer queued:
    /// a grant for it is on its way and will be released by its receiver.
    fn cancel(&self, waiter: ConnectionId) -> bool {
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
            debug_assert!(state.in_flight > 0, "room in flight was given back twice");
            state.in_flight = state.in_flight.saturating_sub(1);
            // A request ended, so the accept queue has room again.
            state.held_back = false;
            self.grant_free_slots(&mut state)
        };
        granted.into_iter().for_each(|waiter| self.sink.deliver(waiter));
    }

    fn grant_free_slots(&self, state: &mut State) -> Vec<ConnectionId> {
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
    struct Recorder(Mutex<Vec<ConnectionId>>);

    impl GrantSink for Arc<Recorder> {
        fn deliver(&self, waiter: ConnectionId) {
            self.0.lock().unwrap().push(waiter);
        }
    }

    fn waiter(slot: usize) -> ConnectionId {
        ConnectionId { loop_index: 0, slot, serial: slot as u64 }
    }

    fn setup(workers: usize) -> (Arc<Dispatcher>, Arc<Recorder>) {
        setup_with(workers, DispatchLimits { per_worker: 1, max_queued: 100 })
    }

    fn setup_with(workers: usize, limits: DispatchLimits) -> (Arc<Dispatcher>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (Dispatcher::new(workers, limits, Box::new(Arc::clone(&recorder))), recorder)
    }

    fn queued(admission: Admission) -> QueuePlace {
        match admission {
            Admission::Queued(place) => place,
            Admission::Granted(_) => panic!("granted, not queued"),
            Admission::Full => panic!("full, not queued"),
        }
    }

    fn granted(admission: Admission) -> InFlight {
        match admission {
            Admission::Granted(room) => room,
            Admission::Queued(_) => panic!("queued, not granted"),
            Admission::Full => panic!("full, not granted"),
        }
    }

    #[test]
    fn never_more_in_flight_than_the_limit_and_fifo_after() {
        let (dispatcher, recorder) = setup(2);
        let first = granted(dispatcher.admit(waiter(1)));
        let second = granted(dispatcher.admit(waiter(2)));
        let _places: Vec<_> = (3..6).map(|slot| queued(dispatcher.admit(waiter(slot)))).collect();
        assert_eq!(dispatcher.stats(), DispatchStats { workers: 2, limit: 2, in_flight: 2, queued: 3 });

        drop(first);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(3)]);
        assert_eq!(dispatcher.stats().in_flight, 2, "the grant holds the room given back");
        drop(second);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(3), waiter(4)]);
    }

    #[test]
    fn newcomers_do_not_jump_the_queue() {
        let (dispatcher, _recorder) = setup(1);
        let held = granted(dispatcher.admit(waiter(1)));
        let second = queued(dispatcher.admit(waiter(2)));
        drop(held); // grants waiter 2
        let _in_flight = second.granted();
        let _third = queued(dispatcher.admit(waiter(3)));
        assert_eq!(dispatcher.stats().in_flight, 1);
    }

    #[test]
    fn a_dropped_place_leaves_the_queue_and_a_late_one_gives_its_grant_back() {
        let (dispatcher, recorder) = setup(1);
        let held = granted(dispatcher.admit(waiter(1)));
        let second = queued(dispatcher.admit(waiter(2)));
        let third = queued(dispatcher.admit(waiter(3)));
        drop(second);
        assert_eq!(dispatcher.stats().queued, 1, "the departed waiter left the queue");
        drop(held);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(3)], "its turn skipped");
        // The grant for waiter 3 is on its way as it leaves: the loop that
        // receives it finds no one and gives the room back.
        drop(third);
        assert_eq!(dispatcher.stats().in_flight, 1, "still counted until the grant is handled");
        dispatcher.release_undelivered();
        assert_eq!(dispatcher.stats().in_flight, 0);
    }

    #[test]
    fn raising_the_limit_grants_waiters_and_zero_holds_everyone() {
        let (dispatcher, recorder) = setup(0);
        let _places: Vec<_> = (1..4).map(|slot| queued(dispatcher.admit(waiter(slot)))).collect();
        dispatcher.set_worker_count(2);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(1), waiter(2)]);
        assert_eq!(dispatcher.stats().queued, 1);
    }

    #[test]
    fn the_cap_is_per_worker_and_a_full_queue_says_so() {
        let (dispatcher, _recorder) = setup_with(2, DispatchLimits { per_worker: 3, max_queued: 2 });
        let _held: Vec<_> = (0..6).map(|slot| granted(dispatcher.admit(waiter(slot)))).collect();
        let _sixth = queued(dispatcher.admit(waiter(6)));
        let _seventh = queued(dispatcher.admit(waiter(7)));
        assert!(matches!(dispatcher.admit(waiter(8)), Admission::Full));
        assert_eq!(dispatcher.stats(), DispatchStats { workers: 2, limit: 6, in_flight: 6, queued: 2 });
    }

    #[test]
    fn a_full_accept_queue_holds_grants_back_until_a_request_ends() {
        let (dispatcher, recorder) = setup(2);
        let first = granted(dispatcher.admit(waiter(1)));
        let second = granted(dispatcher.admit(waiter(2)));
        let _second_again = second.requeue_at_head(waiter(2));
        let _third = queued(dispatcher.admit(waiter(3)));
        assert_eq!(dispatcher.stats().in_flight, 1, "room is free but held back");
        dispatcher.retry_if_stuck();
        assert!(recorder.0.lock().unwrap().is_empty(), "a release is still coming");

        drop(first);
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(2), waiter(3)], "the requeued waiter goes first");
    }

    #[test]
    fn a_hold_with_nothing_in_flight_is_lifted_by_the_tick() {
        let (dispatcher, recorder) = setup(1);
        let room = granted(dispatcher.admit(waiter(1)));
        let _place = room.requeue_at_head(waiter(1));
        assert!(recorder.0.lock().unwrap().is_empty());
        dispatcher.retry_if_stuck();
        assert_eq!(*recorder.0.lock().unwrap(), vec![waiter(1)]);
    }
}

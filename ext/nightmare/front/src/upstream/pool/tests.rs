//! The pool's rules, one behaviour per test.
use super::*;
use crate::upstream::spec::HostRoute;

/// Grants as a loop gets them; the room stays taken until a test
/// hands it back (`take_rooms`, then drop).
#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<(ConnectionId, InFlight)>>,
    kept: Mutex<Vec<InFlight>>,
    hosts_lost: std::sync::atomic::AtomicUsize,
}

impl GrantSink for Arc<Recorder> {
    fn deliver(&self, waiter: ConnectionId, room: InFlight) {
        self.delivered.lock().unwrap().push((waiter, room));
    }

    fn host_lost(&self) {
        self.hosts_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recorder {
    /// Who got room on which server since the last look.
    fn take(&self) -> Vec<(ConnectionId, ServerId)> {
        let rooms = self.take_rooms();
        let seen = rooms.iter().map(|(waiter, room)| (*waiter, room.server())).collect();
        self.kept.lock().unwrap().extend(rooms.into_iter().map(|(_, room)| room));
        seen
    }

    fn take_rooms(&self) -> Vec<(ConnectionId, InFlight)> {
        std::mem::take(&mut self.delivered.lock().unwrap())
    }
}

fn waiter(slot: usize) -> ConnectionId {
    ConnectionId { loop_index: 0, slot, serial: slot as u64 }
}

fn remote(port: u16, backup: bool) -> ServerSpec {
    let mut spec = ServerSpec::new(UpstreamAddress::Tcp(([10, 0, 0, 2], port).into()));
    spec.backup = backup;
    spec
}

fn local(workers: usize, per_worker: usize) -> Option<LocalWorkers> {
    Some(LocalWorkers { socket: "/tmp/w.sock".into(), secret: [7; 16], workers, per_worker })
}

fn pool(local: Option<LocalWorkers>, spec: UpstreamSpec, max_queued: usize) -> (Arc<Pool>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    (Pool::new(local, &spec, max_queued, Box::new(Arc::clone(&recorder))), recorder)
}

fn granted(admission: Admission) -> InFlight {
    match admission {
        Admission::Granted(room) => room,
        Admission::Queued(_) => panic!("queued, not granted"),
        Admission::Full => panic!("full, not granted"),
        Admission::Exhausted => panic!("exhausted, not granted"),
    }
}

fn queued(admission: Admission) -> QueuePlace {
    match admission {
        Admission::Queued(place) => place,
        Admission::Granted(room) => panic!("granted {room:?}, not queued"),
        Admission::Full => panic!("full, not queued"),
        Admission::Exhausted => panic!("exhausted, not queued"),
    }
}

#[test]
fn local_workers_take_their_room_then_the_queue_holds_the_rest_in_order() {
    let (pool, recorder) = pool(local(2, 1), UpstreamSpec::default(), 100);
    let now = Instant::now();
    let first = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let second = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
    assert_eq!((first.server(), second.server()), (0, 0));
    let _places: Vec<_> = (3..6).map(|slot| queued(pool.admit(waiter(slot), 0, &[], Placement::New, now))).collect();
    assert_eq!(pool.stats().queued, 3);
    drop(first);
    assert_eq!(recorder.take(), vec![(waiter(3), 0)], "first come, first served");
    assert_eq!(pool.stats().local_in_flight, 2, "the grant holds the room given back");
    let _fourth = queued(pool.admit(waiter(9), 0, &[], Placement::New, now));
    drop(second);
    assert_eq!(recorder.take(), vec![(waiter(4), 0)], "a newcomer does not jump the queue");
}

#[test]
fn backups_take_the_overflow_only_once_every_local_worker_is_busy() {
    let spec = UpstreamSpec { servers: vec![remote(8080, true)], routes: Vec::new() };
    let (pool, _recorder) = pool(local(2, 16), spec, 100);
    let now = Instant::now();
    let busy: Vec<_> = (0..2).map(|slot| granted(pool.admit(waiter(slot), 0, &[], Placement::New, now))).collect();
    assert!(busy.iter().all(|room| room.server() == 0), "a free worker always gets it");
    let overflow = granted(pool.admit(waiter(3), 0, &[], Placement::New, now));
    assert_eq!(overflow.server(), 1, "both workers busy: the backup");
    drop(busy);
    assert_eq!(granted(pool.admit(waiter(4), 0, &[], Placement::New, now)).server(), 0, "a worker is free again");
}

#[test]
fn a_backup_at_its_max_conns_leaves_the_rest_to_the_workers_accept_queue() {
    let mut backup = remote(8080, true);
    backup.max_conns = 1;
    let (pool, _recorder) = pool(local(1, 4), UpstreamSpec { servers: vec![backup], routes: Vec::new() }, 100);
    let now = Instant::now();
    let servers: Vec<ServerId> = (0..5)
        .map(|slot| granted(pool.admit(waiter(slot), 0, &[], Placement::New, now)))
        .map(|room| {
            let server = room.server();
            std::mem::forget(room);
            server
        })
        .collect();
    assert_eq!(servers, vec![0, 1, 0, 0, 0], "worker, backup, then the workers' accept queue up to 4");
    assert!(matches!(pool.admit(waiter(9), 0, &[], Placement::New, now), Admission::Queued(_)));
}

#[test]
fn idle_primaries_take_turns() {
    let spec = UpstreamSpec { servers: vec![remote(1, false), remote(2, false), remote(3, false)], routes: Vec::new() };
    let (pool, _recorder) = pool(None, spec, 100);
    let now = Instant::now();
    let turns: Vec<ServerId> =
        (0..6).map(|slot| granted(pool.admit(waiter(slot), 0, &[], Placement::New, now)).server()).collect();
    assert_eq!(turns, vec![0, 1, 2, 0, 1, 2], "one after another when none is busy");
}

#[test]
fn primaries_share_the_load_least_busy_first_and_tried_ones_are_skipped() {
    let spec = UpstreamSpec { servers: vec![remote(1, false), remote(2, false)], routes: Vec::new() };
    let (pool, _recorder) = pool(None, spec, 100);
    let now = Instant::now();
    let a = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let b = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
    assert_ne!(a.server(), b.server());
    assert_eq!(granted(pool.admit(waiter(3), 0, &[a.server()], Placement::New, now)).server(), b.server());
    assert!(
        matches!(pool.admit(waiter(4), 0, &[0, 1], Placement::New, now), Admission::Exhausted),
        "every server tried"
    );
}

#[test]
fn a_server_past_max_fails_rests_for_fail_timeout_and_fail_timeout_zero_never_does() {
    let mut flaky = remote(1, false);
    flaky.max_fails = 2;
    flaky.fail_timeout = Duration::from_secs(10);
    let mut steady = remote(2, false);
    steady.fail_timeout = Duration::ZERO;
    let spec = UpstreamSpec { servers: vec![flaky, steady], routes: Vec::new() };
    let (pool, _recorder) = pool(None, spec, 100);
    let now = Instant::now();
    pool.failed(0, Failure::Refused, now);
    assert_eq!(pool.stats().servers_out_of_use, 0, "one failure of two allowed");
    pool.failed(0, Failure::Refused, now);
    assert_eq!(pool.stats().servers_out_of_use, 1);
    for _ in 0..5 {
        pool.failed(1, Failure::Refused, now);
    }
    assert_eq!(granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).server(), 1, "fail_timeout 0: still in use");
    let later = now + Duration::from_secs(11);
    pool.tick(later);
    assert_eq!(pool.stats().servers_out_of_use, 0, "back after fail_timeout");
}

#[test]
fn the_prober_takes_a_suspect_as_soon_as_there_is_one() {
    let spec = UpstreamSpec { servers: vec![remote(1, false), remote(2, false)], routes: Vec::new() };
    let (pool, _recorder) = pool(None, spec, 100);
    assert!(pool.take_suspects(Duration::from_millis(10)).is_empty(), "none: the wait runs out");
    let accuser = Arc::clone(&pool);
    let suspicion = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        accuser.suspect(1);
    });
    let began = Instant::now();
    assert_eq!(pool.take_suspects(Duration::from_secs(30)), vec![1]);
    assert!(began.elapsed() < Duration::from_secs(30), "woken by the suspicion, not the timeout");
    suspicion.join().expect("thread");
    assert!(pool.take_suspects(Duration::ZERO).is_empty(), "taken once");
}

#[test]
fn an_unreachable_server_waits_for_the_prober_and_is_tried_only_as_a_last_resort() {
    let spec = UpstreamSpec { servers: vec![remote(1, false), remote(2, true)], routes: Vec::new() };
    let (pool, recorder) = pool(None, spec, 100);
    let now = Instant::now();
    pool.failed(0, Failure::Unreachable, now);
    pool.failed(0, Failure::Unreachable, now);
    assert_eq!(pool.unreachable(), vec![0]);
    assert_eq!(recorder.hosts_lost.load(std::sync::atomic::Ordering::Relaxed), 1, "the loops told once");
    assert_eq!(granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).server(), 1, "live traffic goes around it");
    assert_eq!(granted(pool.admit(waiter(2), 0, &[1], Placement::New, now)).server(), 0, "nothing else is left");
    pool.reachable(0);
    assert!(pool.unreachable().is_empty());
    assert!(recorder.take().is_empty());
}

#[test]
fn a_grant_never_sends_a_waiter_back_to_a_server_it_tried() {
    let mut full = remote(1, false);
    full.max_conns = 1;
    let mut refusing = remote(2, false);
    refusing.max_conns = 1;
    refusing.fail_timeout = Duration::ZERO;
    let (pool, recorder) = pool(None, UpstreamSpec { servers: vec![full, refusing], routes: Vec::new() }, 100);
    let now = Instant::now();
    let _on_full = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let on_refusing = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
    assert_eq!(on_refusing.server(), 1);
    let _refused_once = queued(pool.admit(waiter(3), 0, &[1], Placement::Again, now));
    let _newcomer = queued(pool.admit(waiter(4), 0, &[], Placement::New, now));
    drop(on_refusing);
    assert_eq!(recorder.take(), vec![(waiter(4), 1)], "the one that tried it lets the next go");
}

#[test]
fn a_full_accept_queue_on_the_last_resort_queues_instead_of_trying_it_again() {
    let spec = UpstreamSpec { servers: vec![remote(1, false)], routes: Vec::new() };
    let (pool, recorder) = pool(None, spec, 100);
    let now = Instant::now();
    pool.failed(0, Failure::Refused, now);
    assert_eq!(pool.stats().servers_out_of_use, 1);
    granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).busy();
    let _place = queued(pool.admit(waiter(1), 0, &[], Placement::AfterBusy(0), now));
    pool.tick(now);
    assert_eq!(recorder.take(), vec![(waiter(1), 0)], "the hold lifted, the last resort again");
}

#[test]
fn waiters_get_a_last_resort_once_their_whole_group_is_out_of_use() {
    let mut first = remote(1, false);
    first.max_conns = 1;
    let mut second = remote(2, false);
    second.max_conns = 1;
    let (pool, recorder) = pool(None, UpstreamSpec { servers: vec![first, second], routes: Vec::new() }, 100);
    let now = Instant::now();
    let on_first = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let on_second = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
    let _waiting = queued(pool.admit(waiter(3), 0, &[], Placement::New, now));
    pool.failed(on_second.server(), Failure::Refused, now);
    drop(on_second);
    assert!(recorder.take().is_empty(), "a live server is still there to wait for");
    pool.failed(on_first.server(), Failure::Refused, now);
    assert_eq!(recorder.take(), vec![(waiter(3), 1)], "nothing live is left: the one with room");
}

#[test]
fn a_full_accept_queue_holds_its_server_back_until_a_request_ends() {
    let (pool, recorder) = pool(local(2, 1), UpstreamSpec::default(), 100);
    let now = Instant::now();
    let first = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let second = granted(pool.admit(waiter(2), 0, &[], Placement::New, now));
    second.busy();
    let requeued = queued(pool.admit(waiter(2), 0, &[], Placement::AfterBusy(0), now));
    let _third = queued(pool.admit(waiter(3), 0, &[], Placement::New, now));
    assert_eq!(pool.stats().local_in_flight, 1, "room is free but held back");
    pool.tick(now);
    assert!(recorder.take().is_empty(), "a release is still coming");
    drop(first);
    assert_eq!(recorder.take(), vec![(waiter(2), 0), (waiter(3), 0)], "the requeued one first");
    drop(requeued);
}

#[test]
fn a_hold_with_nothing_in_flight_is_lifted_by_the_tick() {
    let (pool, recorder) = pool(local(1, 1), UpstreamSpec::default(), 100);
    let now = Instant::now();
    granted(pool.admit(waiter(1), 0, &[], Placement::New, now)).busy();
    let _place = queued(pool.admit(waiter(1), 0, &[], Placement::AfterBusy(0), now));
    pool.tick(now);
    assert_eq!(recorder.take(), vec![(waiter(1), 0)]);
}

#[test]
fn a_request_back_from_busy_workers_waits_for_them_rather_than_a_gone_backup() {
    let spec = UpstreamSpec { servers: vec![remote(8080, true)], routes: Vec::new() };
    let (pool, recorder) = pool(local(1, 2), spec, 100);
    let now = Instant::now();
    pool.failed(1, Failure::Unreachable, now);
    let working = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    granted(pool.admit(waiter(2), 0, &[], Placement::New, now)).busy();
    let _place = queued(pool.admit(waiter(2), 0, &[], Placement::AfterBusy(0), now));
    drop(working);
    assert_eq!(recorder.take(), vec![(waiter(2), 0)], "the workers, once a request to them ends");
}

#[test]
fn a_dropped_place_leaves_the_queue_and_a_late_one_gives_its_grant_back() {
    let (pool, recorder) = pool(local(1, 1), UpstreamSpec::default(), 100);
    let now = Instant::now();
    let held = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let second = queued(pool.admit(waiter(2), 0, &[], Placement::New, now));
    let third = queued(pool.admit(waiter(3), 0, &[], Placement::New, now));
    drop(second);
    drop(held);
    let rooms = recorder.take_rooms();
    let seen: Vec<_> = rooms.iter().map(|(waiter, room)| (*waiter, room.server())).collect();
    assert_eq!(seen, vec![(waiter(3), 0)], "the departed one's turn skipped");
    drop(third);
    assert_eq!(pool.stats().local_in_flight, 1, "counted until the grant is handled");
    drop(rooms);
    assert_eq!(pool.stats().local_in_flight, 0, "a grant no one takes is given back");
}

#[test]
fn room_taken_before_its_host_was_found_gone_knows_it_and_a_last_resort_after_does_not() {
    let mut only = remote(1, false);
    only.max_conns = 1;
    let (pool, recorder) = pool(None, UpstreamSpec { servers: vec![only], routes: Vec::new() }, 100);
    let now = Instant::now();
    let before = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let _waiting = queued(pool.admit(waiter(2), 0, &[], Placement::New, now));
    // As a timed-out connect does: the room goes back (and on to the
    // waiter) just before the host is marked gone.
    drop(before);
    pool.failed(0, Failure::Unreachable, now);
    let rooms = recorder.take_rooms();
    assert_eq!(rooms.len(), 1);
    assert!(rooms[0].1.host_lost(), "granted before the news: it leaves the host");
    drop(rooms);
    let last_resort = granted(pool.admit(waiter(3), 0, &[], Placement::New, now));
    assert!(!last_resort.host_lost(), "sent there knowing: it waits it out");
    pool.reachable(0);
    assert!(!last_resort.host_lost());
}

#[test]
fn the_queue_has_a_cap_and_zero_workers_hold_everyone_until_some_come() {
    let (pool, recorder) = pool(local(0, 2), UpstreamSpec::default(), 2);
    let now = Instant::now();
    let _places: Vec<_> = (1..3).map(|slot| queued(pool.admit(waiter(slot), 0, &[], Placement::New, now))).collect();
    assert!(matches!(pool.admit(waiter(3), 0, &[], Placement::New, now), Admission::Full));
    pool.set_worker_count(1);
    assert_eq!(recorder.take(), vec![(waiter(1), 0), (waiter(2), 0)], "one worker, two in flight");
    assert_eq!(pool.stats().local_limit, 2);
}

#[test]
fn hosts_go_to_their_routes_and_others_to_the_default_group_if_any() {
    let admin =
        HostRoute { pattern: HostPattern::parse("admin.example.com").unwrap(), servers: vec![remote(9, false)] };
    let spec = UpstreamSpec { servers: vec![remote(1, false)], routes: vec![admin.clone()] };
    let (pool, _recorder) = pool(None, spec, 100);
    assert_eq!(pool.group_for(Some(b"ADMIN.example.com:443")), Some(1));
    assert_eq!(pool.group_for(Some(b"www.example.com")), Some(0));
    assert_eq!(pool.group_for(None), Some(0));
    let now = Instant::now();
    let routed = granted(pool.admit(waiter(1), 1, &[], Placement::New, now));
    assert_eq!(pool.server(routed.server()).address, admin.servers[0].address);

    let (only_routes, _recorder) = self::pool(None, UpstreamSpec { servers: Vec::new(), routes: vec![admin] }, 100);
    assert_eq!(only_routes.group_for(Some(b"other.example.com")), None, "no default: 421");
}

#[test]
fn groups_queue_apart_so_one_busy_group_does_not_block_another() {
    let mut busy = remote(1, false);
    busy.max_conns = 1;
    let other = HostRoute { pattern: HostPattern::parse("other.test").unwrap(), servers: vec![remote(2, false)] };
    let (pool, _recorder) = pool(None, UpstreamSpec { servers: vec![busy], routes: vec![other] }, 100);
    let now = Instant::now();
    let _held = granted(pool.admit(waiter(1), 0, &[], Placement::New, now));
    let _waiting = queued(pool.admit(waiter(2), 0, &[], Placement::New, now));
    assert_eq!(granted(pool.admit(waiter(3), 1, &[], Placement::New, now)).server(), 1, "the other group goes on");
}

//! What every loop thread of one front shares: settings, the upstream pool,
//! the log and its throttles, the mailboxes, the temp budget, client
//! counts, and the stop signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::access_log::AccessLog;
use crate::acme::AcmeStore;
use crate::config::FrontConfig;
use crate::connection_permit::ClientCounts;
use crate::counters::{Counters, LoopPhases};
use crate::log::{Log, Throttle};
use crate::mailbox::Mailboxes;
use crate::request_share::RequestShares;
use crate::static_files::StaticFiles;
use crate::static_files::accel::AccelFiles;
use crate::temp_budget::TempBudget;
use crate::upstream::pool::Pool;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    Running,
    /// Stop accepting, finish what was accepted (up to shutdown_timeout).
    Graceful,
    /// Close everything now.
    Immediate,
}

/// Where the front writes: its log (to Unicorn's logger) and the access log.
pub struct Outputs {
    pub log: Arc<Log>,
    pub access_log: Option<Arc<AccessLog>>,
}

pub struct Shared {
    pub config: FrontConfig,
    /// The servers requests go to, and the queue in front of them.
    pub pool: Arc<Pool>,
    pub log: Arc<Log>,
    /// A line per request, when access_log is on.
    pub access_log: Option<Arc<AccessLog>>,
    /// For "an upstream cannot be reached" or "failed", which every
    /// request would say.
    pub upstream_trouble: Throttle,
    /// For "a request went to a backup", likewise under overload.
    pub overflow: Throttle,
    /// For "the workers' accept queue is full", likewise.
    pub full_accept_queue: Throttle,
    /// For requests refused because the workers cannot keep up.
    pub overload: Throttle,
    pub mailboxes: Arc<Mailboxes>,
    /// try_files, when configured.
    pub static_files: Option<StaticFiles>,
    /// The `sendfile_root` directories (X-Accel-Redirect).
    pub accel_files: Option<AccelFiles>,
    /// Answers `/.well-known/acme-challenge/` (HTTP-01) while an order waits.
    pub acme_challenges: Option<Arc<AcmeStore>>,
    /// What all temp files together may hold (temp_path_max_size).
    pub temp_budget: Arc<TempBudget>,
    /// For "the temp budget is spent", which every upload would say.
    pub temp_budget_spent: Throttle,
    /// For "idle keep-alive connections closed for room", and for
    /// "an address over its share", both possibly on every accept.
    pub idle_closed_for_room: Throttle,
    pub address_over_share: Throttle,
    /// Open client connections, for max_connections and its per-address share.
    pub clients: Arc<ClientCounts>,
    /// Requests each client address has with the upstreams (requests_per_address).
    pub shares: Arc<RequestShares>,
    pub counters: Counters,
    /// What each loop's connections are doing, as of its last tick.
    pub phases: Vec<LoopPhases>,
    /// Requests from loops at max_connections, with none of their own idle
    /// to close, that the others close some of theirs.
    room_wanted: AtomicU64,
    stop: AtomicU8,
}

/// What the front answers itself, with no upstream.
#[derive(Default)]
pub struct OwnAnswers {
    pub static_files: Option<StaticFiles>,
    pub accel_files: Option<AccelFiles>,
    /// HTTP-01 tokens, when an ssl block orders certificates.
    pub acme_challenges: Option<Arc<AcmeStore>>,
}

impl Shared {
    pub fn new(
        config: FrontConfig,
        pool: Arc<Pool>,
        outputs: Outputs,
        mailboxes: Arc<Mailboxes>,
        own_answers: OwnAnswers,
    ) -> Self {
        let OwnAnswers { static_files, accel_files, acme_challenges } = own_answers;
        // Unset, it is half of what temp_path has free at start.
        let temp_budget = TempBudget::new(
            config.temp_path_max_size.or_else(|| TempBudget::half_of_free_space(&config.temp_path)).unwrap_or(0),
        );
        let clients = ClientCounts::new(&config);
        // Without workers of its own (standalone), a front's automatic share
        // is 16: its upstreams' capacity is not known here.
        let workers = match pool.stats().workers {
            0 => 16,
            workers => workers,
        };
        let shares = RequestShares::new(
            config.requests_per_address,
            workers,
            config.max_queued_requests,
            Box::new(Arc::clone(&mailboxes)),
        );
        let threads = config.threads;
        Shared {
            config,
            pool,
            log: outputs.log,
            access_log: outputs.access_log,
            upstream_trouble: Throttle::new(Duration::from_secs(1)),
            overflow: Throttle::new(Duration::from_secs(1)),
            full_accept_queue: Throttle::new(Duration::from_secs(1)),
            overload: Throttle::new(Duration::from_secs(1)),
            mailboxes,
            static_files,
            accel_files,
            acme_challenges,
            temp_budget,
            temp_budget_spent: Throttle::new(Duration::from_secs(60)),
            idle_closed_for_room: Throttle::new(Duration::from_secs(10)),
            address_over_share: Throttle::new(Duration::from_secs(10)),
            clients,
            shares,
            counters: Counters::default(),
            phases: (0..threads).map(|_| LoopPhases::default()).collect(),
            room_wanted: AtomicU64::new(0),
            stop: AtomicU8::new(0),
        }
    }

    /// Counts a response of `status` as it begins.
    pub fn count_response(&self, status: u16) {
        self.counters.count_response(status);
    }

    /// Asks every loop to close a few idle keep-alive connections, as room
    /// for clients waiting in the backlog.
    pub fn want_room_for_newcomers(&self) {
        self.room_wanted.fetch_add(1, Ordering::AcqRel);
        self.mailboxes.wake_all();
    }

    /// How many times room was asked for: a loop acts on each new one.
    pub fn room_wanted(&self) -> u64 {
        self.room_wanted.load(Ordering::Acquire)
    }

    pub fn stop_mode(&self) -> StopMode {
        match self.stop.load(Ordering::Acquire) {
            0 => StopMode::Running,
            1 => StopMode::Graceful,
            _ => StopMode::Immediate,
        }
    }

    /// Stopping only ever escalates: a graceful stop can become immediate.
    pub fn request_stop(&self, mode: StopMode) {
        let value = match mode {
            StopMode::Running => return,
            StopMode::Graceful => 1,
            StopMode::Immediate => 2,
        };
        self.stop.fetch_max(value, Ordering::AcqRel);
        self.mailboxes.wake_all();
    }
}

//! What a connection does about a spent temp budget: its worker waiting on
//! it asks for a round of shedding (see `crate::shedding`) and is pumped
//! every tick to take what comes back; a connection chosen in a round is
//! closed, and its worker read out and freed.

use std::time::Duration;

use super::{Connection, State};
use crate::access_log::CLIENT_CLOSED;
use crate::loop_context::{LoopContext, Verdict};
use crate::upstream::exchange::Exchange;

/// How long a worker may wait on the spent budget before clients are shed
/// for it: long enough for a reader that only paused to take some, short
/// against Unicorn's `timeout`.
const SHED_AFTER: Duration = Duration::from_secs(1);

impl Connection {
    /// On each tick: a worker that waits on the spent temp budget.
    pub(super) fn check_on_budget(&mut self, ctx: &mut LoopContext) -> Option<Verdict> {
        let State::Exchanging(exchange) = &self.state else { return None };
        let waited = exchange.waiting_on_budget(ctx.now)?;
        if waited >= SHED_AFTER {
            shed_round(&format!("a worker waited on it {:.1}s", waited.as_secs_f64()), ctx);
        }
        // Whatever came back since is taken now.
        Some(self.drive(ctx))
    }

    /// This connection's client was chosen in a round: it goes, reset, and
    /// so do its temp file and what the kernel held for it; its worker, if
    /// still writing, is read out and freed.
    pub(super) fn shed(&mut self, exchange: Box<Exchange>, ctx: &mut LoopContext) -> State {
        let sent = exchange.sent_to_client();
        self.end_entry(exchange.status().unwrap_or(CLIENT_CLOSED), sent, ctx);
        self.client.reset();
        self.abandon(exchange, ctx)
    }
}

/// Sheds the clients holding the spent budget longest, if any qualifies and
/// no round ran just now, telling their loops; one line in the log says
/// who and why (`what` is what the spent budget kept waiting).
pub(super) fn shed_round(what: &str, ctx: &LoopContext) {
    let budget = &ctx.shared.temp_budget;
    let shed = budget.holders.shed_round(budget.shed_wanted(), ctx.now);
    let Some(first) = shed.first() else { return };
    for client in &shed {
        ctx.shared.mailboxes.post_written(client.owner);
    }
    let others = if shed.len() > 1 { format!(" and {} more", shed.len() - 1) } else { String::new() };
    ctx.shared.log.info(format!(
        "temp_path_max_size ({} bytes) is spent and {what}: shed client {}, which held {} bytes of temp files \
         and took {} bytes in {:.1}s{others} (the clients holding the most and reading the slowest)",
        budget.limit(),
        first.peer,
        first.bytes,
        first.taken,
        first.age.as_secs_f64(),
    ));
}

//! What a connection's handlers borrow from the loop that runs them, and
//! how the loop's poll tokens are laid out: which token is a listener's,
//! which a client's, which its worker's.

use std::sync::Arc;
use std::time::Instant;

use mio::{Registry, Token};

use crate::shared::Shared;
use crate::spool_writer::SpoolWriter;

/// The loop's own wakeup (mailbox posts, stop requests).
pub const WAKER: Token = Token(0);
/// Listeners take the tokens from here up to the first connection's.
pub const FIRST_LISTENER_TOKEN: usize = 1;
/// Client sockets have even tokens from here, their worker sockets the odd
/// one after.
pub const FIRST_CONNECTION_TOKEN: usize = 1024;

pub fn client_token(slot: usize) -> Token {
    Token(FIRST_CONNECTION_TOKEN + slot * 2)
}

pub fn upstream_token(slot: usize) -> Token {
    Token(FIRST_CONNECTION_TOKEN + slot * 2 + 1)
}

/// Whose readiness a token reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenOwner {
    Waker,
    Listener(usize),
    /// A connection's slab slot, and whether the event is its worker's socket.
    Connection {
        slot: usize,
        upstream: bool,
    },
}

impl TokenOwner {
    pub fn of(token: Token) -> TokenOwner {
        match token {
            WAKER => TokenOwner::Waker,
            Token(token) if token >= FIRST_CONNECTION_TOKEN => {
                let offset = token - FIRST_CONNECTION_TOKEN;
                TokenOwner::Connection { slot: offset / 2, upstream: offset % 2 == 1 }
            }
            Token(token) => TokenOwner::Listener(token - FIRST_LISTENER_TOKEN),
        }
    }
}

/// What a connection's handlers borrow from their loop.
pub struct LoopContext<'a> {
    pub shared: &'a Arc<Shared>,
    pub registry: &'a Registry,
    /// The loop's read buffer, shared by its connections in turn.
    pub scratch: &'a mut [u8],
    pub now: Instant,
    /// Writes this loop's response temp files.
    pub writer: &'a SpoolWriter,
    /// This turn brought news that a host was found gone.
    pub host_news: bool,
}

/// What a handler tells its loop about the connection it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_has_one_owner_and_connections_get_two_each() {
        assert_eq!(TokenOwner::of(WAKER), TokenOwner::Waker);
        assert_eq!(TokenOwner::of(Token(FIRST_LISTENER_TOKEN + 2)), TokenOwner::Listener(2));
        for slot in [0, 1, 7, 100_000] {
            assert_eq!(TokenOwner::of(client_token(slot)), TokenOwner::Connection { slot, upstream: false });
            assert_eq!(TokenOwner::of(upstream_token(slot)), TokenOwner::Connection { slot, upstream: true });
        }
    }
}

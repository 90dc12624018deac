//! What an HTTP/2 client connection and its streams' connections share:
//! the session, and who is who in the loop. Streams' connections live in
//! the loop's slab like any client's; they reach the session through this
//! link, and tell the loop which of them (and whether the client's
//! connection) have something to do, by the wakes they leave here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::connection_id::ConnectionId;
use crate::http2::session::Session;

pub struct LinkState {
    pub session: Session,
    /// The connection that holds the client's socket.
    pub client: ConnectionId,
    /// Each stream's connection, once the loop made it.
    pub streams: HashMap<u32, ConnectionId>,
    /// A stream's connection wrote, ended or left: the client's connection
    /// has frames to send or state to drop.
    pub client_wanted: bool,
}

/// One thread's loop uses it; the lock is for `Send`, never contended.
#[derive(Clone)]
pub struct Link(Arc<Mutex<LinkState>>);

impl Link {
    pub fn new(session: Session, client: ConnectionId) -> Self {
        Link(Arc::new(Mutex::new(LinkState { session, client, streams: HashMap::new(), client_wanted: false })))
    }

    pub fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic while it was held closed that connection only (see the
        // loop's `guarded`); the state is still whole enough to wind down.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

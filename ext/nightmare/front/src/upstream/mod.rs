//! Where buffered requests go: the servers (the master's own workers, and
//! others by address), the pool that gives each request room on one of
//! them or a place in the queue, the connection with its preamble, one
//! request's exchange with a server, the tunnel a 101 turns it into, and
//! the prober that watches for unreachable servers to come back.

pub mod address;
pub mod connect;
pub mod exchange;
pub mod outbound;
pub mod pool;
pub mod prober;
pub mod proxy_header;
pub mod spec;
pub mod tunnel;

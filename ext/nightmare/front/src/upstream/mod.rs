//! Where buffered requests go: the queue in front of the workers, the
//! connection to their private listener with its preamble, one request's
//! exchange with a worker, and the tunnel a 101 turns it into.

pub mod connect;
pub mod dispatch;
pub mod exchange;
pub mod proxy_header;
pub mod tunnel;

//! A worker's response on its way to the client: framed for the client's
//! connection, and held (memory, then a temp file) only as long as the
//! client does not take it.

pub mod framing;
pub mod send_pace;
pub mod spool;

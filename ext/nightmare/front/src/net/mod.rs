//! Sockets as the front sees them: the listeners it inherits, a client's
//! stream (plain or TLS), and one way of reading every syscall's outcome.

pub mod accept;
pub mod client_address;
pub mod client_stream;
pub mod descriptors;
pub mod listener;
pub mod send_buffer;
pub mod socket_io;
pub mod tls;

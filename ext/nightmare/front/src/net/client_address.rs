//! Who a client is, as the front logs it and the worker will report it.

use std::net::SocketAddr;

/// Who the front's client is, as the worker will report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAddress {
    Ip(SocketAddr),
    /// A client of a UNIX-socket listener: no IP address to pass on.
    Local,
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddress::Ip(address) => address.ip().fmt(f),
            // What Unicorn reports for clients of a UNIX-socket listener.
            ClientAddress::Local => f.write_str("127.0.0.1"),
        }
    }
}

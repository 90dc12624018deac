//! HTTP/2 to clients (RFC 9113). Each stream becomes an ordinary HTTP/1.1
//! request for a worker; what lives here is the wire side: header
//! compression, and next the frames and the connection's streams.

pub mod error_code;
pub mod frame;
pub mod hpack;
pub mod request_head;
pub mod response_frames;
pub mod session;

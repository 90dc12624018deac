//! HTTP/2 to clients (RFC 9113). Each stream becomes an ordinary HTTP/1.1
//! request, read by a connection of its own as if from any client; what
//! lives here is the wire side (frames, header compression, the session
//! and its streams) and the link between the client's connection and its
//! streams' connections.

pub mod error_code;
pub mod frame;
pub mod hpack;
pub mod link;
pub mod request_head;
pub mod response_frames;
pub mod session;
pub mod stream_end;

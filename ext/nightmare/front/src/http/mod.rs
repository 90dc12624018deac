//! Pieces of HTTP/1.1 that both directions use: chunked decoding, dates,
//! and the front's own short replies.

pub mod chunked;
pub mod date;
pub mod error_response;

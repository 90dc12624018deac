//! Header compression (RFC 7541), written here against the RFC's examples
//! and the hpack-test-case corpus rather than taken from a crate. The
//! candidates looked at (`hpack` 0.3, last released in 2015;
//! `loona-hpack` 0.4.3, last released in November 2024; `httlib-hpack`
//! 0.1.3) ship no fuzzing, and none lets the decoder stop keeping a header
//! list past a size limit while it still keeps its table in step, which
//! the front needs to answer 431 on one stream without breaking the
//! connection.
//!
//! The decoder bounds what a client can make it hold: the dynamic table by
//! the size the front announces, a header list by the caller's limit, and
//! its scratch space by the header block it was given (itself bounded by
//! the frame layer). The encoder keeps no table, as nginx's does not: a
//! response's fields refer to the static table or go as literals, Huffman
//! coded when that is shorter, so a client's table size is never in play.

mod decoder;
mod encoder;
mod huffman;
mod integer;
mod table;

pub use decoder::{DecodeError, Decoded, Decoder};
pub use encoder::{encode_field, encode_status};
pub use table::ENTRY_OVERHEAD;

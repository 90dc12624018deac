//! A client's request as the front takes it in: the head under limits, then
//! the body, in memory or in a temp file, before any worker sees it.

pub mod body;
pub mod body_spool;
pub mod head;

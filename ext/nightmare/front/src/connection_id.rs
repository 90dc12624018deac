//! How a connection is named across threads: grants, spool writes and
//! the pool's queue address it by loop, slot and serial.

/// Where a connection lives: its loop, its slab slot, and a serial that
/// tells it apart from a later connection reusing the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionId {
    pub loop_index: usize,
    pub slot: usize,
    pub serial: u64,
}

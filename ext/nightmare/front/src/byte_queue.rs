//! A queue of bytes on their way somewhere: pushed at the back, consumed
//! from the front. A worker's response passes through one on its way to the
//! client, a tunnel's client bytes on their way to the worker. Its capacity
//! is a budget, not a hard wall: the reader stops once that much is
//! pending, so framing added to the last read (a rewritten head, chunk
//! sizes) overshoots it by a bounded amount only.

/// Where a framed response goes.
pub trait ResponseSink {
    fn push(&mut self, data: &[u8]);
}

impl ResponseSink for ByteQueue {
    fn push(&mut self, data: &[u8]) {
        ByteQueue::push(self, data);
    }
}

#[derive(Debug)]
pub struct ByteQueue {
    bytes: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl ByteQueue {
    pub fn new(capacity: usize) -> Self {
        ByteQueue { bytes: Vec::new(), start: 0, capacity }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Room left in the budget: how much may be read from the worker now.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// Bytes waiting for the client.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.bytes.len() + data.len() > self.bytes.capacity() {
            if self.start > 0 {
                self.bytes.drain(..self.start);
                self.start = 0;
            }
            // Exactly what is needed (at least the budget): a Vec left to
            // grow by doubling would make a 64 KiB budget cost 128 KiB.
            let wanted = (self.bytes.len() + data.len()).max(self.capacity);
            self.bytes.reserve_exact(wanted - self.bytes.len());
        }
        self.bytes.extend_from_slice(data);
    }

    pub fn consumed(&mut self, count: usize) {
        debug_assert!(count <= self.len());
        self.start += count;
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_drain_in_order_and_reuse_the_space() {
        let mut buffer = ByteQueue::new(8);
        assert_eq!(buffer.room(), 8);
        buffer.push(b"abcdef");
        assert_eq!(buffer.room(), 2);
        buffer.consumed(4);
        assert_eq!(buffer.pending(), b"ef");
        buffer.push(b"ghijkl");
        assert_eq!(buffer.pending(), b"efghijkl");
        assert_eq!(buffer.room(), 0);
        buffer.push(b"mn");
        assert_eq!(buffer.len(), 10, "framing may overshoot the budget");
        assert!(buffer.bytes.capacity() < 16, "by what it needs, not by doubling");
        buffer.consumed(10);
        assert!(buffer.is_empty());
        assert_eq!(buffer.room(), 8);
    }
}

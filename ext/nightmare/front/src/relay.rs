//! The fixed-size buffer a worker's response passes through on its way to
//! the client. Full means "stop reading the worker", never "grow".

#[derive(Debug)]
pub struct RelayBuffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl RelayBuffer {
    pub fn new(capacity: usize) -> Self {
        RelayBuffer {
            bytes: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.bytes.len()
    }

    /// Bytes waiting for the client.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Free room to read into, moving pending bytes to the front first when
    /// that is the only way to make room.
    pub fn space(&mut self) -> &mut [u8] {
        if self.end == self.bytes.len() && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.bytes[self.end..]
    }

    pub fn filled(&mut self, count: usize) {
        debug_assert!(self.end + count <= self.bytes.len());
        self.end += count;
    }

    pub fn consumed(&mut self, count: usize) {
        debug_assert!(self.start + count <= self.end);
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_drains_and_compacts() {
        let mut buffer = RelayBuffer::new(8);
        buffer.space()[..6].copy_from_slice(b"abcdef");
        buffer.filled(6);
        buffer.consumed(4);
        assert_eq!(buffer.pending(), b"ef");
        assert_eq!(buffer.space().len(), 2, "room at the end is used first");
        buffer.space()[..2].copy_from_slice(b"gh");
        buffer.filled(2);
        assert!(!buffer.is_full());
        assert_eq!(
            buffer.space().len(),
            4,
            "then pending bytes move to the front"
        );
        assert_eq!(buffer.pending(), b"efgh");
        buffer.space()[..4].copy_from_slice(b"ijkl");
        buffer.filled(4);
        assert!(buffer.is_full());
        buffer.consumed(8);
        assert!(buffer.is_empty());
        assert_eq!(buffer.space().len(), 8);
    }
}

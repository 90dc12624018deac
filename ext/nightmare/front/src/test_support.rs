//! Helpers for the unit tests only.

/// A small deterministic generator (xorshift64*): the same inputs on every
/// run, so a failure can be replayed.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, limit: usize) -> usize {
        (self.next() % limit.max(1) as u64) as usize
    }

    /// Bytes shaped like HTTP, with the separators, digits, spaces, control
    /// bytes and multi-byte UTF-8 that break careless parsers.
    pub fn http_like(&mut self, pieces: &[&[u8]], length: usize) -> Vec<u8> {
        let extras: [&[u8]; 12] =
            [b"\r\n", b"\n", b"\r", b" ", b":", b";", b",", b"0", b"f", "é".as_bytes(), b"\x00", b"\xff"];
        let mut out = Vec::with_capacity(length);
        while out.len() < length {
            if self.below(3) == 0 {
                out.extend_from_slice(extras[self.below(extras.len())]);
            } else {
                out.extend_from_slice(pieces[self.below(pieces.len())]);
            }
        }
        out
    }

    /// Splits `input` at random points, as reads would.
    pub fn pieces<'a>(&mut self, input: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let take = 1 + self.below(rest.len().min(40));
            out.push(&rest[..take]);
            rest = &rest[take..];
        }
        out
    }
}

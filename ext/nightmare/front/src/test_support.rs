//! Helpers for the unit tests only: a deterministic noise source and the
//! fuzz runner the parsers' randomized tests share.

use std::panic::{AssertUnwindSafe, catch_unwind};

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

    /// `count` random bytes.
    pub fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next() as u8).collect()
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

    /// A valid input with one to four random edits (a byte changed, a span
    /// dropped, doubled or cut off, a dictionary word put in): inputs close
    /// to valid reach the states plain noise never does.
    pub fn mutate(&mut self, valid: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
        let mut out = valid.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            let span = 1 + self.below(8);
            match self.below(5) {
                0 if at < out.len() => out[at] = self.next() as u8,
                1 => drop(out.drain(at..(at + span).min(out.len()))),
                2 => {
                    let copy = out[at..(at + span).min(out.len())].to_vec();
                    out.splice(at..at, copy);
                }
                3 => out.truncate(at),
                _ => {
                    let word = dictionary[self.below(dictionary.len())];
                    out.splice(at..at, word.iter().copied());
                }
            }
        }
        out
    }
}

/// Runs `check` on `cases` inputs from `make`, each with what `make` says
/// it must come to (`()` when only the absence of panics and the checks'
/// own invariants count). The count `NIGHTMARE_FUZZ_CASES` overrides, for a
/// longer hunt (`rake fuzz`); the seed is `NIGHTMARE_FUZZ_SEED` when set, so
/// a hunt can explore other inputs. A failing case is reported with its
/// seed, index and input: all it takes to replay it and keep it as a
/// regression case.
pub fn fuzz<Expected>(
    default_seed: u64,
    cases: usize,
    make: impl FnMut(&mut Noise) -> (Vec<u8>, Expected),
    check: impl FnMut(&[u8], &Expected, &mut Noise),
) {
    fuzz_heavy(default_seed, cases, 1, make, check);
}

/// `fuzz` for cases that each cost about `weight` ordinary ones (a whole
/// body of a hundred kilobytes): a hunt runs `NIGHTMARE_FUZZ_CASES /
/// weight` of them, so it ends when the others do.
pub fn fuzz_heavy<Expected>(
    default_seed: u64,
    cases: usize,
    weight: usize,
    mut make: impl FnMut(&mut Noise) -> (Vec<u8>, Expected),
    mut check: impl FnMut(&[u8], &Expected, &mut Noise),
) {
    let seed = std::env::var("NIGHTMARE_FUZZ_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(default_seed);
    let asked = std::env::var("NIGHTMARE_FUZZ_CASES").ok().and_then(|count| count.parse::<usize>().ok());
    let cases = asked.map_or(cases, |count| (count / weight.max(1)).max(1));
    let mut noise = Noise::new(seed);
    for case in 0..cases {
        let (input, expected) = make(&mut noise);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&input, &expected, &mut noise))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            panic!(
                "fuzz case {case} (NIGHTMARE_FUZZ_SEED={seed}) failed: {message}\ninput: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

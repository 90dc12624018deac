//! A token bucket for what a client may do often but not without end
//! (resetting streams, PINGs, SETTINGS, empty frames): each use takes a
//! token; tokens come back at a steady rate up to the bucket's size.

use std::time::Instant;

#[derive(Debug)]
pub struct Allowance {
    tokens: f64,
    size: f64,
    per_second: f64,
    refilled_at: Instant,
}

impl Allowance {
    pub fn new(size: u32, per_second: u32, now: Instant) -> Self {
        Allowance {
            tokens: f64::from(size),
            size: f64::from(size),
            per_second: f64::from(per_second),
            refilled_at: now,
        }
    }

    /// Takes one use; false once the client has used more than its share.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.size);
        self.refilled_at = now;
        self.tokens -= 1.0;
        self.tokens >= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_up_to_the_size_then_the_rate() {
        let start = Instant::now();
        let mut allowance = Allowance::new(3, 2, start);
        assert!((0..3).all(|_| allowance.take(start)));
        assert!(!allowance.take(start), "the fourth at once is over");
        let mut allowance = Allowance::new(3, 2, start);
        (0..3).for_each(|_| assert!(allowance.take(start)));
        assert!(allowance.take(start + Duration::from_millis(500)), "one back after half a second");
        assert!(!allowance.take(start + Duration::from_millis(500)));
    }
}

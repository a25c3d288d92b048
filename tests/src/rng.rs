//! A small seeded pseudo-random generator (SplitMix64) for tests that pick random moments:
//! the seed is printed, and a failing run is replayed by setting it again.

use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast and good enough to pick delays.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The seed from the environment variable `var` when it is set (to replay a run), else
    /// one from the clock; printed either way.
    ///
    /// # Panics
    /// When `var` is set but is not an unsigned integer.
    #[must_use]
    pub fn seed_from_env(var: &str) -> u64 {
        let seed = match std::env::var(var) {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={text:?} is not an unsigned integer")),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        eprintln!("random seed: {seed} (replay with {var}={seed})");
        seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low ..= high` (`low <= high`); the tiny modulo bias does not matter here.
    pub fn in_range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        match (high - low).checked_add(1) {
            Some(span) => low + self.next_u64() % span,
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // The first outputs of SplitMix64 seeded with 1234567 (the reference C code's test).
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn ranges_are_inclusive_and_bounded() {
        let mut rng = SplitMix64::new(7);
        let draws: Vec<u64> = (0..1000).map(|_| rng.in_range(3, 5)).collect();
        assert!(draws.iter().all(|d| (3..=5).contains(d)));
        for v in 3..=5 {
            assert!(draws.contains(&v), "{v} never drawn");
        }
        assert_eq!(SplitMix64::new(1).in_range(9, 9), 9);
    }
}

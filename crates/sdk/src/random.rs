//! The random number each evaluation passes to the engine for `$random` bucketing.
//!
//! The engine has no random source of its own, so the client draws one per evaluation: without
//! it, a rollout that buckets by `$random` (Unleash's `random` stickiness, and its `default`
//! stickiness for an anonymous context) would place nobody. Getters are on the hot path and
//! must not allocate or make a system call, so the number comes from a per-thread SplitMix64
//! generator (a few arithmetic instructions), seeded once per thread from the operating system.
//! It need not be unpredictable, only uniform and different between threads: it picks a bucket,
//! it guards nothing.

use std::cell::Cell;

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A fresh uniform number for this evaluation.
#[inline]
pub(crate) fn next_u32() -> u32 {
    STATE.with(|state| {
        let s = state.get().wrapping_add(GOLDEN);
        state.set(s);
        // The high half of the mixed output: SplitMix64's best bits.
        (mix(s) >> 32) as u32
    })
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014).
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed from the operating system; should it have none, the clock and this thread's stack
/// address, which still differ between threads and runs.
fn seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        mix(nanos ^ (std::ptr::addr_of!(local) as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_spread_over_the_whole_range() {
        // 64,000 draws into 64 bins: each bin expects 1,000; a fair generator stays well within
        // ±25% (over 7 standard deviations).
        let mut bins = [0u32; 64];
        for _ in 0..64_000 {
            bins[(next_u32() >> 26) as usize] += 1;
        }
        assert!(bins.iter().all(|&n| (750..=1250).contains(&n)), "{bins:?}");
    }

    #[test]
    fn threads_draw_different_sequences() {
        let draw = || (0..4).map(|_| next_u32()).collect::<Vec<_>>();
        let here = draw();
        let there = std::thread::spawn(draw).join().unwrap_or_default();
        assert_eq!(there.len(), 4);
        assert_ne!(here, there);
    }
}

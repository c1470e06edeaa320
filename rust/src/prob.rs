// SPDX-License-Identifier: GPL-2.0

//! Probabilistic rules: which condition one uniform draw picks.
//!
//! A probabilistic rule's conditions carry weights in units of 1/[`TOTAL`]. Per
//! connection the kernel draws one number uniformly from `[0, TOTAL)` and walks the
//! conditions in order, subtracting weights: condition `i` is picked for exactly
//! `w_i` of the `TOTAL` possible draws, so with a uniform draw its probability is
//! `w_i / TOTAL`, and the rest (`TOTAL - sum`, never negative: sums over `TOTAL` are
//! refused) goes to the default port. The kernel compiles this file unchanged; the host
//! tests below prove the exact counts over every draw and check the statistics over
//! millions of draws, which a test in a VM at a few connections per second cannot.

/// Weights are in units of `1 / TOTAL`.
pub const TOTAL: u32 = 10_000;

/// One connection's draw, walked down the conditions.
#[derive(Clone, Copy, Debug)]
pub struct Draw(u32);

impl Draw {
    /// A draw `d`, uniform in `[0, TOTAL)`.
    pub const fn new(d: u32) -> Self {
        Self(d)
    }

    /// Whether the next condition, of weight `w`, takes the connection. Call it for the
    /// conditions in order until one does.
    pub fn take(&mut self, w: u16) -> bool {
        let w = u32::from(w);
        if self.0 < w {
            true
        } else {
            self.0 -= w;
            false
        }
    }
}

/// The condition (index into `weights`) that draw `d` picks, `None` for the default.
pub fn pick(weights: &[u16], d: u32) -> Option<usize> {
    let mut draw = Draw::new(d);
    weights.iter().position(|&w| draw.take(w))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Counts per condition (last entry: the default) over every possible draw.
    fn exhaustive(weights: &[u16]) -> Vec<u32> {
        let mut counts = std::vec![0u32; weights.len() + 1];
        for d in 0..TOTAL {
            counts[pick(weights, d).unwrap_or(weights.len())] += 1;
        }
        counts
    }

    #[test]
    fn paper_example_exact() {
        assert_eq!(u64::from(TOTAL), crate::abi::limits::WEIGHT_TOTAL);
        // `tcpchains -a d -p 80 -r 8081 -c 3000`: 30% to 8081, the rest to the default.
        assert_eq!(exhaustive(&[3000]), [3000, 7000]);
        assert_eq!(exhaustive(&[0]), [0, 10000]);
        assert_eq!(exhaustive(&[10000]), [10000, 0]);
        assert_eq!(exhaustive(&[2500, 2500, 5000]), [2500, 2500, 5000, 0]);
    }

    proptest! {
        /// Over all TOTAL draws, condition i is picked exactly w_i times: with a uniform
        /// draw its probability is exactly w_i / TOTAL.
        #[test]
        fn every_draw_counted_exactly(ws in proptest::collection::vec(0u16..=2000, 0..6)) {
            let counts = exhaustive(&ws);
            let sum: u32 = ws.iter().map(|&w| u32::from(w)).sum();
            for (i, &w) in ws.iter().enumerate() {
                prop_assert_eq!(counts[i], u32::from(w));
            }
            prop_assert_eq!(counts[ws.len()], TOTAL - sum);
        }
    }

    /// xorshift64*: a small, seeded generator, so the test is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in [0, n) by rejection, as `get_random_u32_below` is.
        fn below(&mut self, n: u32) -> u32 {
            let zone = u32::MAX - u32::MAX % n;
            loop {
                let v = (self.next() >> 32) as u32;
                if v < zone {
                    return v % n;
                }
            }
        }
    }

    /// The testing bar's C2 for the split: p in {0, .25, .5, 1}, here over 2,000,000
    /// draws each (the VM test only shows that the kernel uses this code).
    #[test]
    fn split_within_four_sigma() {
        const N: u64 = 2_000_000;
        let mut rng = Rng(0x6f70_656e_716f_7321);
        for w in [0u16, 2500, 5000, 10000] {
            let mut k = 0u64;
            for _ in 0..N {
                if pick(&[w], rng.below(TOTAL)) == Some(0) {
                    k += 1;
                }
            }
            let p = f64::from(w) / f64::from(TOTAL);
            let mean = p * N as f64;
            let sigma = (N as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (k as f64 - mean).abs() <= 4.0 * sigma,
                "p = {p}: {k} of {N}, want {mean} +- {}",
                4.0 * sigma
            );
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The quotas of socket groups: a token bucket (accept rate, output bandwidth) and the
//! credits of an accept-ratio group.
//!
//! Both are plain state machines driven by the caller's clock (nanoseconds) and locked
//! by the caller, so the module and the host tests run the same code. Neither
//! allocates nor overflows: every product is bounded before it is formed.

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// A token bucket: `rate` tokens per second, holding at most `burst` tokens.
///
/// Tokens are kept in units of 1/[`NS_PER_SEC`] token ("nanotokens"), so refilling
/// after `dt` nanoseconds adds exactly `dt * rate` units and no fraction is ever lost:
/// over any interval the bucket admits at most `burst + rate * interval` tokens, and
/// exactly that when it is drained continuously.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Nanotokens available.
    level: u64,
    /// Time of the last refill.
    last_ns: u64,
}

/// Largest rate and burst a bucket takes (10^10: 10 GB/s, or 10^10 connections/s), so
/// that `burst * NS_PER_SEC` fits in a `u64`.
pub const MAX_RATE: u64 = 10_000_000_000;

impl TokenBucket {
    /// A full bucket of `rate` tokens per second and `burst` tokens, at time `now_ns`.
    /// Both are clamped to `1..=MAX_RATE`.
    pub fn new(rate: u64, burst: u64, now_ns: u64) -> Self {
        let mut b = Self {
            rate: 1,
            burst: 1,
            level: 0,
            last_ns: now_ns,
        };
        b.set(rate, burst, now_ns);
        b.level = b.cap();
        b
    }

    /// Changes rate and burst at `now_ns`, keeping the tokens earned so far (up to the
    /// new burst).
    pub fn set(&mut self, rate: u64, burst: u64, now_ns: u64) {
        self.refill(now_ns);
        self.rate = rate.clamp(1, MAX_RATE);
        self.burst = burst.clamp(1, MAX_RATE);
        self.level = self.level.min(self.cap());
    }

    /// Tokens per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Most tokens the bucket holds.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn cap(&self) -> u64 {
        self.burst * NS_PER_SEC
    }

    /// Adds the tokens earned since the last refill.
    pub fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let room = self.cap() - self.level;
        // Past `room / rate` nanoseconds the bucket is full anyway: bound the product.
        let add = if dt > room / self.rate {
            room
        } else {
            (dt * self.rate).min(room)
        };
        self.level += add;
    }

    /// Whole tokens available at `now_ns`.
    pub fn available(&mut self, now_ns: u64) -> u64 {
        self.refill(now_ns);
        self.level / NS_PER_SEC
    }

    /// Takes up to `want` whole tokens at `now_ns`; returns how many were taken (0 when
    /// the bucket holds less than one).
    pub fn take_up_to(&mut self, want: u64, now_ns: u64) -> u64 {
        let n = self.available(now_ns).min(want);
        self.level -= n * NS_PER_SEC;
        n
    }

    /// Takes one token at `now_ns` if there is one.
    pub fn take_one(&mut self, now_ns: u64) -> bool {
        self.take_up_to(1, now_ns) == 1
    }

    /// Returns `n` tokens taken but not used (up to the burst).
    pub fn give_back(&mut self, n: u64) {
        let units = n.min(self.burst).saturating_mul(NS_PER_SEC);
        self.level = (self.level + units.min(self.cap() - self.level)).min(self.cap());
    }

    /// Nanoseconds from `now_ns` until `n` whole tokens (at most the burst) are there;
    /// 0 if they are.
    pub fn wait_ns(&mut self, n: u64, now_ns: u64) -> u64 {
        self.refill(now_ns);
        let need = n.clamp(1, self.burst) * NS_PER_SEC;
        if self.level >= need {
            0
        } else {
            (need - self.level).div_ceil(self.rate)
        }
    }
}

/// Default burst of a bucket of `rate` tokens per second: a tenth of a second's worth,
/// at least one token (accept rate) or `min` (bytes: one full segment's worth).
pub fn default_burst(rate: u64, min: u64) -> u64 {
    (rate / 10).max(min).clamp(1, MAX_RATE)
}

/// The credits of an accept-ratio group: member `i` may accept `weight[i]` connections
/// per round. A member out of credit waits while another member has both credit and
/// connections waiting; when no member can use its credit any more, every member's
/// credit is restored to its weight (a new round). The group is therefore
/// work-conserving (an idle member never holds the others back) and, while every
/// member has connections waiting, the accepts of members `i` and `j` stay in the ratio
/// `weight[i] : weight[j]`, off by at most one round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credit {
    /// Connections per round.
    pub weight: u32,
    /// Connections left in this round.
    pub left: u32,
}

/// What [`ratio_admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ratio {
    /// Accept; the member's credit was taken. `new_round` says that every credit was
    /// restored first (the others should look again).
    Go {
        /// A new round began.
        new_round: bool,
    },
    /// Wait: another member can still use its credit.
    Wait,
}

/// Decides whether member `me` may accept one connection. `busy(j)` says whether
/// member `j` has connections waiting.
pub fn ratio_admit(credits: &mut [Credit], me: usize, busy: impl Fn(usize) -> bool) -> Ratio {
    let Some(c) = credits.get(me) else {
        return Ratio::Wait;
    };
    if c.left > 0 {
        credits[me].left -= 1;
        return Ratio::Go { new_round: false };
    }
    let blocked_by_other = credits
        .iter()
        .enumerate()
        .any(|(j, c)| j != me && c.left > 0 && busy(j));
    if blocked_by_other {
        return Ratio::Wait;
    }
    for c in credits.iter_mut() {
        c.left = c.weight;
    }
    if credits[me].left == 0 {
        return Ratio::Wait;
    }
    credits[me].left -= 1;
    Ratio::Go { new_round: true }
}

/// Whether [`ratio_admit`] would let member `me` accept now (without taking credit).
pub fn ratio_would_admit(credits: &[Credit], me: usize, busy: impl Fn(usize) -> bool) -> bool {
    match credits.get(me) {
        None => false,
        Some(c) if c.left > 0 => true,
        Some(c) => {
            c.weight > 0
                && !credits
                    .iter()
                    .enumerate()
                    .any(|(j, c)| j != me && c.left > 0 && busy(j))
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_starts_full_and_refills_exactly() {
        let mut b = TokenBucket::new(10, 2, 0);
        assert!(b.take_one(0));
        assert!(b.take_one(0));
        assert!(!b.take_one(0));
        assert_eq!(b.wait_ns(1, 0), 100_000_000);
        assert!(!b.take_one(99_999_999));
        assert!(b.take_one(100_000_000));
        // Ten seconds of continuous demand admit exactly rate * 10 (plus the burst,
        // already spent here).
        let mut n = 0;
        let mut t = 100_000_000;
        while t <= 10_100_000_000 {
            if b.take_one(t) {
                n += 1;
            }
            t += 1_000_000;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn bucket_bytes_take_partial() {
        let mut b = TokenBucket::new(100_000, 10_000, 0);
        assert_eq!(b.take_up_to(65536, 0), 10_000);
        assert_eq!(b.take_up_to(65536, 0), 0);
        assert_eq!(b.take_up_to(65536, 50_000_000), 5_000);
        b.give_back(1_000);
        assert_eq!(b.available(50_000_000), 1_000);
        assert_eq!(b.wait_ns(3_000, 50_000_000), 20_000_000);
    }

    #[test]
    fn bucket_survives_huge_gaps_and_rates() {
        let mut b = TokenBucket::new(MAX_RATE, MAX_RATE, 0);
        assert_eq!(b.take_up_to(u64::MAX, 0), MAX_RATE);
        assert_eq!(b.available(u64::MAX), MAX_RATE);
        let mut b = TokenBucket::new(0, 0, 5);
        assert_eq!((b.rate(), b.burst()), (1, 1));
        b.set(3, 1, 2);
        assert_eq!(b.available(2), 1);
    }

    #[test]
    fn ratio_one_to_three_when_saturated() {
        let mut c = [Credit { weight: 1, left: 1 }, Credit { weight: 3, left: 3 }];
        let mut got = [0u32; 2];
        // Both members always busy; each tries in turn.
        for i in 0..4000 {
            let me = i % 2;
            if let Ratio::Go { .. } = ratio_admit(&mut c, me, |_| true) {
                got[me] += 1;
            }
        }
        // Off by at most one round.
        assert!((got[0] * 3).abs_diff(got[1]) <= 3, "{got:?}");
        assert!(got[0] + got[1] > 2000);
    }

    #[test]
    fn ratio_is_work_conserving() {
        let mut c = [Credit { weight: 1, left: 0 }, Credit { weight: 3, left: 2 }];
        // Member 1 has credit but nothing waiting: member 0 goes on a new round.
        assert!(ratio_would_admit(&c, 0, |j| j == 0));
        assert_eq!(
            ratio_admit(&mut c, 0, |j| j == 0),
            Ratio::Go { new_round: true }
        );
        assert_eq!(c[1].left, 3);
        // Member 1 busy with credit: member 0 waits.
        assert!(!ratio_would_admit(&c, 0, |_| true));
        assert_eq!(ratio_admit(&mut c, 0, |_| true), Ratio::Wait);
        assert_eq!(ratio_admit(&mut c, 5, |_| true), Ratio::Wait);
    }

    proptest! {
        #[test]
        fn bucket_never_admits_more_than_burst_plus_rate(
            rate in 1u64..100_000, burst in 1u64..10_000,
            steps in proptest::collection::vec((0u64..50_000_000, 1u64..70_000), 1..200),
        ) {
            let mut b = TokenBucket::new(rate, burst, 0);
            let (mut t, mut total) = (0u64, 0u64);
            for (dt, want) in steps {
                t += dt;
                let got = b.take_up_to(want, t);
                prop_assert!(got <= want);
                total += got;
            }
            // Admitted <= burst + rate * t (in exact nanotoken arithmetic).
            prop_assert!(u128::from(total) * u128::from(NS_PER_SEC)
                <= u128::from(burst) * u128::from(NS_PER_SEC) + u128::from(rate) * u128::from(t));
        }

        #[test]
        fn ratio_holds_for_any_weights(w0 in 1u32..20, w1 in 1u32..20, rounds in 1u32..50) {
            let mut c = [Credit { weight: w0, left: w0 }, Credit { weight: w1, left: w1 }];
            let mut got = [0u32; 2];
            let mut i = 0;
            while got[0] + got[1] < rounds * (w0 + w1) {
                let me = i % 2;
                if let Ratio::Go { .. } = ratio_admit(&mut c, me, |_| true) {
                    got[me] += 1;
                }
                i += 1;
            }
            prop_assert_eq!(u64::from(got[0]) * u64::from(w1), u64::from(got[1]) * u64::from(w0));
        }
    }
}

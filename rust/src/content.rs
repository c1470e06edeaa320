// SPDX-License-Identifier: GPL-2.0

//! Content matching: one automaton for all the strings of a content rule.
//!
//! An Aho-Corasick automaton in compact form: the trie of the strings with its states
//! numbered in breadth-first order, so that the children of a state are consecutive
//! states whose labels (bytes) are sorted; a suffix (failure) link per state; and a full
//! 256-entry row for the root. A state costs 8 bytes whatever the bytes the strings use:
//! 131 KiB for a rule at the limit of [`super::abi::limits::MAX_PATTERN_BYTES`], where a
//! dense table of `states x 256` transitions took 8 MiB.
//!
//! Cost of matching: each input byte moves one level down the trie at most, and each
//! suffix link taken moves at least one level up, so a scan of `n` bytes takes at most
//! `2n` transitions in total, each a binary search among at most 256 sorted labels (8
//! comparisons), whatever the number of strings: a single pass over the data, never a
//! rescan per condition. One byte alone may follow up to `MAX_PATTERN - 1` links, paid
//! for by the bytes that went down. [`Scan`] keeps its state across segments, so the
//! bound holds for a connection's whole data when it is fed in pieces.
//!
//! Priority: every state records the smallest condition index among the strings that
//! end there (directly or through its suffix links), so a scan reports the first-added
//! condition among all strings found, and can stop early once condition 0 is found.
//!
//! [`Tables::build`] allocates with a caller-given allocator (the kernel's `KVVec`,
//! accounted, tests' `Vec`): scratch space for the trie, then the final tables, sized
//! to the states the strings really have. A [`Scan`] is a few bytes of state, so a
//! match can be resumed segment by segment.

/// No state / no match.
pub const NONE: u16 = u16::MAX;

/// Folds ASCII letters to lower case when `nocase`.
const fn fold(b: u8, nocase: bool) -> u8 {
    if nocase {
        b.to_ascii_lowercase()
    } else {
        b
    }
}

/// Sizes of the tables of an automaton.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Most states the strings can need (one plus their total length).
    pub states: usize,
}

/// Why an automaton cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// More states than a `u16` can number.
    TooLarge,
    /// A table given by the allocator is shorter than asked for.
    ShortTable,
    /// An empty string.
    Empty,
}

/// Checks `patterns`, computes the byte map (case folding) into `map` and bounds the
/// number of states.
pub fn plan<'p, I>(patterns: I, nocase: bool, map: &mut [u8; 256]) -> Result<Plan, BuildError>
where
    I: Iterator<Item = &'p [u8]>,
{
    let mut states = 1usize;
    for p in patterns {
        if p.is_empty() {
            return Err(BuildError::Empty);
        }
        states += p.len();
        if states >= usize::from(NONE) {
            return Err(BuildError::TooLarge);
        }
    }
    for (b, m) in map.iter_mut().enumerate() {
        *m = fold(b as u8, nocase);
    }
    Ok(Plan { states })
}

/// Bytes of the tables of an automaton of `states` states (see [`Tables::bytes`]).
pub const fn table_bytes(states: usize) -> usize {
    // `first` has one more entry; `map` and `root` are fixed.
    (4 * states + 1) * core::mem::size_of::<u16>() + 256 + 256 * core::mem::size_of::<u16>()
}

/// The trie of the strings, in scratch space, with states numbered in insertion order
/// and children in sorted singly linked lists.
struct Trie<'s> {
    child: &'s mut [u16],
    sib: &'s mut [u16],
    label: &'s mut [u16],
    out: &'s mut [u16],
    len: usize,
}

impl Trie<'_> {
    /// Adds `p` as condition `cond`.
    fn insert(&mut self, p: &[u8], map: &[u8; 256], cond: u16) -> Result<(), BuildError> {
        let mut s = 0usize;
        for b in p {
            let c = u16::from(map[usize::from(*b)]);
            let (mut prev, mut cur) = (NONE, *self.child.get(s).ok_or(BuildError::ShortTable)?);
            while cur != NONE && self.label[usize::from(cur)] < c {
                prev = cur;
                cur = self.sib[usize::from(cur)];
            }
            if cur != NONE && self.label[usize::from(cur)] == c {
                s = usize::from(cur);
                continue;
            }
            let v = self.len;
            if v >= self.child.len() {
                return Err(BuildError::ShortTable);
            }
            self.len += 1;
            (self.label[v], self.sib[v], self.child[v], self.out[v]) = (c, cur, NONE, NONE);
            match prev {
                NONE => self.child[s] = v as u16,
                p => self.sib[usize::from(p)] = v as u16,
            }
            s = v;
        }
        self.out[s] = self.out[s].min(cond);
        Ok(())
    }
}

/// Why [`Tables::build`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TablesError<E> {
    /// The strings cannot form an automaton.
    Build(BuildError),
    /// The allocator failed.
    Alloc(E),
}

/// An automaton that owns its tables, held in `V` (`KVVec<u16>` in the kernel, `Vec<u16>`
/// in tests).
///
/// # Invariants
///
/// `first` has `states + 1` entries, non-decreasing, from `first[0] == 1` to
/// `first[states] == states`; `label`, `fail` and `out` have `states` entries; the
/// children of state `s` are the states `first[s]..first[s + 1]`, whose labels are
/// strictly increasing; `fail[s] < s` for every state but the root; `root` entries are
/// states.
pub struct Tables<V> {
    map: [u8; 256],
    root: [u16; 256],
    first: V,
    label: V,
    fail: V,
    out: V,
}

impl<V: core::ops::DerefMut<Target = [u16]>> Tables<V> {
    /// Builds the automaton of `patterns` (string `i` is condition `i`), allocating its
    /// tables and scratch space with `alloc(len)`, which returns `len` entries.
    pub fn build<'p, I, E>(
        patterns: I,
        nocase: bool,
        mut alloc: impl FnMut(usize) -> Result<V, E>,
    ) -> Result<Self, TablesError<E>>
    where
        I: Iterator<Item = &'p [u8]> + Clone,
    {
        use TablesError::{Alloc, Build};
        let mut map = [0u8; 256];
        let n = plan(patterns.clone(), nocase, &mut map)
            .map_err(Build)?
            .states;
        let mut scratch = || alloc(n).map_err(Alloc);
        let (mut child, mut sib, mut tlabel, mut tout, mut order) =
            (scratch()?, scratch()?, scratch()?, scratch()?, scratch()?);
        if [&child, &sib, &tlabel, &tout, &order]
            .iter()
            .any(|v| v.len() < n)
        {
            return Err(Build(BuildError::ShortTable));
        }
        (child[0], tout[0]) = (NONE, NONE);
        let mut trie = Trie {
            child: &mut child,
            sib: &mut sib,
            label: &mut tlabel,
            out: &mut tout,
            len: 1,
        };
        for (i, p) in patterns.enumerate() {
            let i = u16::try_from(i).map_err(|_| Build(BuildError::TooLarge))?;
            trie.insert(p, &map, i).map_err(Build)?;
        }
        let states = trie.len;
        // Breadth-first numbering: `order[new] = old`, and the children of each state
        // (visited in label order) get consecutive numbers.
        let (mut first, mut label, mut fail, mut out) = (
            alloc(states + 1).map_err(Alloc)?,
            alloc(states).map_err(Alloc)?,
            alloc(states).map_err(Alloc)?,
            alloc(states).map_err(Alloc)?,
        );
        if first.len() <= states || [&label, &fail, &out].iter().any(|v| v.len() < states) {
            return Err(Build(BuildError::ShortTable));
        }
        order[0] = 0;
        let mut tail = 1usize;
        for s in 0..states {
            let old = usize::from(order[s]);
            first[s] = tail as u16;
            let mut cur = child[old];
            while cur != NONE {
                if tail >= states {
                    return Err(Build(BuildError::ShortTable));
                }
                order[tail] = cur;
                tail += 1;
                cur = sib[usize::from(cur)];
            }
            (label[s], out[s]) = (tlabel[old], tout[old]);
        }
        first[states] = tail as u16;
        let mut root = [0u16; 256];
        for v in usize::from(first[0])..usize::from(first[1]) {
            root[usize::from(label[v])] = v as u16;
        }
        // Suffix links, shallower states first: the link of a child of `s` is where the
        // link of `s` goes on the child's label.
        fail[0] = 0;
        for s in 0..states {
            for v in usize::from(first[s])..usize::from(first[s + 1]) {
                let f = if s == 0 {
                    0
                } else {
                    let dfa = Dfa {
                        map: &map,
                        root: &root,
                        first: &first,
                        label: &label,
                        fail: &fail,
                        out: &out,
                    };
                    dfa.step(usize::from(fail[s]), label[v])
                };
                fail[v] = f as u16;
                out[v] = out[v].min(out[f]);
            }
        }
        Ok(Self {
            map,
            root,
            first,
            label,
            fail,
            out,
        })
    }

    /// The automaton, borrowed for matching.
    pub fn dfa(&self) -> Dfa<'_> {
        Dfa {
            map: &self.map,
            root: &self.root,
            first: &self.first,
            label: &self.label,
            fail: &self.fail,
            out: &self.out,
        }
    }

    /// Number of states.
    pub fn states(&self) -> usize {
        self.out.len()
    }

    /// Bytes of the tables (the maps, and 8 bytes per state).
    pub fn bytes(&self) -> usize {
        table_bytes(self.states())
    }
}

/// A built automaton, borrowed (see [`Tables`] for what the tables hold).
#[derive(Clone, Copy)]
pub struct Dfa<'a> {
    /// Byte map (case folding).
    pub map: &'a [u8; 256],
    /// Transitions of the root.
    pub root: &'a [u16; 256],
    /// Children of each state: `first[s]..first[s + 1]`.
    pub first: &'a [u16],
    /// Byte of the transition into each state.
    pub label: &'a [u16],
    /// Suffix link of each state.
    pub fail: &'a [u16],
    /// Smallest condition index matched in each state, or [`NONE`].
    pub out: &'a [u16],
}

impl Dfa<'_> {
    /// The state after `s` on (mapped) byte `c`.
    fn step(&self, mut s: usize, c: u16) -> usize {
        loop {
            if s == 0 {
                return usize::from(self.root[usize::from(c) & 0xff]);
            }
            let lo = self.first.get(s).map_or(0, |v| usize::from(*v));
            let hi = self.first.get(s + 1).map_or(0, |v| usize::from(*v));
            if let Some(Ok(i)) = self.label.get(lo..hi).map(|l| l.binary_search(&c)) {
                return lo + i;
            }
            let f = self.fail.get(s).map_or(0, |f| usize::from(*f));
            // Links go to shallower states, which have smaller numbers (invariant): the
            // loop ends. Checked rather than assumed.
            if f >= s {
                return 0;
            }
            s = f;
        }
    }
}

/// Progress of a match over a connection's data, resumable across segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    state: u16,
    /// Best (smallest) condition index found so far, or [`NONE`].
    pub best: u16,
    /// Bytes scanned so far.
    pub seen: usize,
}

impl Default for Scan {
    fn default() -> Self {
        Self::new()
    }
}

impl Scan {
    /// A scan at the start of the data.
    pub const fn new() -> Self {
        Scan {
            state: 0,
            best: NONE,
            seen: 0,
        }
    }

    /// Feeds `data`, which continues the bytes seen so far. Stops early when condition
    /// 0 (which nothing can beat) is found.
    pub fn feed(&mut self, dfa: &Dfa<'_>, data: &[u8]) {
        let mut s = usize::from(self.state);
        for b in data {
            s = dfa.step(s, u16::from(dfa.map[usize::from(*b)]));
            let o = dfa.out.get(s).copied().unwrap_or(NONE);
            if o < self.best {
                self.best = o;
                if o == 0 {
                    break;
                }
            }
        }
        self.state = s as u16;
        self.seen += data.len();
    }

    /// The condition found, if any.
    pub fn found(&self) -> Option<usize> {
        (self.best != NONE).then_some(usize::from(self.best))
    }
}

/// One remembered [`Scan`] of a [`ScanCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The connection's cookie (never 0); 0: the slot is free.
    key: u64,
    state: u16,
    /// Bytes scanned (at most `u16::MAX`; the look-ahead is far smaller).
    seen: u16,
    /// When the slot was last written, on the cache's clock.
    stamp: u32,
}

impl Slot {
    /// A free slot.
    pub const EMPTY: Slot = Slot {
        key: 0,
        state: 0,
        seen: 0,
        stamp: 0,
    };
}

/// Slots per bucket of a [`ScanCache`].
pub const WAYS: usize = 4;

/// Where each connection that waits for decisive data left its scan, so that new data
/// is scanned from where the last look stopped instead of from byte 0: with it, a
/// connection's data costs one pass however it is segmented (without it, `n` one-byte
/// segments cost `n^2 / 2` steps).
///
/// A cache, not a record: a connection is found by its socket cookie, which the kernel
/// never gives twice, so a slot can never be taken for another connection's; a scan
/// that is not found (evicted, or the connection left the queue) starts again from byte
/// 0, which gives the same verdict. Set-associative, [`WAYS`] slots a bucket, the least
/// recently written evicted: bounded memory and bounded work per look whatever the
/// clients do. Only scans that found nothing are kept (a found string decides).
pub struct ScanCache<V> {
    slots: V,
    clock: u32,
}

impl<V: core::ops::DerefMut<Target = [Slot]>> ScanCache<V> {
    /// A cache over `slots` (all [`Slot::EMPTY`]). Its length should be a power of two
    /// times [`WAYS`]; the slots past the largest such length are not used.
    pub fn new(slots: V) -> Self {
        Self { slots, clock: 0 }
    }

    fn bucket(&self, key: u64) -> core::ops::Range<usize> {
        let buckets = self.slots.len() / WAYS;
        if buckets == 0 {
            return 0..0;
        }
        // The largest power of two not above `buckets`; Fibonacci hashing of the key.
        let bits = usize::BITS - 1 - buckets.leading_zeros();
        let b = match bits {
            0 => 0,
            _ => (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize,
        };
        b * WAYS..(b + 1) * WAYS
    }

    /// The scan left by the connection with cookie `key`, if still remembered.
    pub fn get(&self, key: u64) -> Option<Scan> {
        if key == 0 {
            return None;
        }
        let r = self.bucket(key);
        self.slots
            .get(r)?
            .iter()
            .find(|s| s.key == key)
            .map(|s| Scan {
                state: s.state,
                best: NONE,
                seen: usize::from(s.seen),
            })
    }

    /// The scan left by the connection with cookie `key`, taken out of the cache (its
    /// slot is free again): what a look at new data starts from. One lookup for a
    /// connection decided at this look, and nothing to forget afterwards; an undecided
    /// one is [`put`](Self::put) back.
    pub fn take(&mut self, key: u64) -> Option<Scan> {
        if key == 0 {
            return None;
        }
        let r = self.bucket(key);
        let s = self.slots.get_mut(r)?.iter_mut().find(|s| s.key == key)?;
        let scan = Scan {
            state: s.state,
            best: NONE,
            seen: usize::from(s.seen),
        };
        *s = Slot::EMPTY;
        Some(scan)
    }

    /// Remembers `scan` for the connection with cookie `key`. A scan that found a string
    /// (it decides) or is too long to store is not kept, and any older one is forgotten.
    pub fn put(&mut self, key: u64, scan: &Scan) {
        let Ok(seen) = u16::try_from(scan.seen) else {
            return self.forget(key);
        };
        if scan.best != NONE {
            return self.forget(key);
        }
        if key == 0 {
            return;
        }
        self.clock = self.clock.wrapping_add(1);
        let (clock, r) = (self.clock, self.bucket(key));
        let Some(b) = self.slots.get_mut(r) else {
            return;
        };
        // The connection's own slot, else a free one, else the oldest.
        let age = |s: &Slot| clock.wrapping_sub(s.stamp);
        let i = b
            .iter()
            .position(|s| s.key == key)
            .or_else(|| b.iter().position(|s| s.key == 0))
            .or_else(|| (0..b.len()).max_by_key(|&i| age(&b[i])));
        if let Some(slot) = i.and_then(|i| b.get_mut(i)) {
            *slot = Slot {
                key,
                state: scan.state,
                seen,
                stamp: clock,
            };
        }
    }

    /// Forgets the scan of the connection with cookie `key` (it was decided).
    pub fn forget(&mut self, key: u64) {
        if key == 0 {
            return;
        }
        let r = self.bucket(key);
        if let Some(s) = self
            .slots
            .get_mut(r)
            .and_then(|b| b.iter_mut().find(|s| s.key == key))
        {
            *s = Slot::EMPTY;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::{vec, vec::Vec};

    struct Owned(Tables<Vec<u16>>);

    impl Owned {
        fn new(pats: &[&[u8]], nocase: bool) -> Self {
            let alloc = |n| Ok::<_, ()>(vec![0; n]);
            Owned(Tables::build(pats.iter().copied(), nocase, alloc).unwrap())
        }

        fn dfa(&self) -> Dfa<'_> {
            self.0.dfa()
        }

        fn find(&self, chunks: &[&[u8]]) -> Option<usize> {
            let mut s = Scan::new();
            for c in chunks {
                s.feed(&self.dfa(), c);
            }
            s.found()
        }
    }

    /// The specification: the first pattern, in order, that occurs anywhere.
    fn naive(pats: &[&[u8]], data: &[u8], nocase: bool) -> Option<usize> {
        let f = |v: &[u8]| v.iter().map(|b| fold(*b, nocase)).collect::<Vec<_>>();
        let d = f(data);
        pats.iter()
            .position(|p| d.windows(p.len()).any(|w| w == f(p).as_slice()))
    }

    #[test]
    fn host_headers() {
        let a = Owned::new(&[b"Host: www.foo.com", b"Host: www.bar.com"], false);
        let req = b"GET / HTTP/1.1\r\nHost: www.bar.com\r\n\r\n";
        assert_eq!(a.find(&[req]), Some(1));
        // Split across segments anywhere, even one byte at a time.
        for cut in 0..req.len() {
            assert_eq!(a.find(&[&req[..cut], &req[cut..]]), Some(1), "cut {cut}");
        }
        let bytes: Vec<&[u8]> = req.chunks(1).collect();
        assert_eq!(a.find(&bytes), Some(1));
        assert_eq!(a.find(&[b"GET / HTTP/1.1\r\nHost: www.baz.com\r\n"]), None);
    }

    #[test]
    fn priority_is_order_added() {
        let a = Owned::new(&[b"foo.com", b"www"], false);
        // "www" ends first in the data, but condition 0 wins.
        assert_eq!(a.find(&[b"www.foo.com"]), Some(0));
        // A pattern that is a suffix of another one (found through suffix links).
        let b = Owned::new(&[b"bc", b"abcd"], false);
        assert_eq!(b.find(&[b"xabcd"]), Some(0));
        assert_eq!(b.find(&[b"xabxd"]), None);
    }

    #[test]
    fn case_folding() {
        let a = Owned::new(&[b"host: WWW.Foo.com"], true);
        assert_eq!(a.find(&[b"HOST: www.FOO.COM"]), Some(0));
        let b = Owned::new(&[b"host: www.foo.com"], false);
        assert_eq!(b.find(&[b"Host: www.foo.com"]), None);
    }

    #[test]
    fn empty_and_limits() {
        let mut map = [0; 256];
        assert_eq!(
            plan([&b""[..]].into_iter(), false, &mut map),
            Err(BuildError::Empty)
        );
        let big = vec![b'a'; 70_000];
        assert_eq!(
            plan([big.as_slice()].into_iter(), false, &mut map),
            Err(BuildError::TooLarge)
        );
        // All 256 byte values in strings still build and match.
        let all: Vec<u8> = (0..=255).collect();
        let a = Owned::new(&[&all[..]], false);
        assert_eq!(a.find(&[&all[..]]), Some(0));
        let b = Owned::new(&[&all[..], b"\xfe\xff"], false);
        assert_eq!(b.find(&[b"\xff\xfe"]), None);
        assert_eq!(b.find(&[b"x\xfe\xff"]), Some(1));
    }

    #[test]
    fn size_at_the_limit() {
        // 16,384 bytes of strings using every byte value, as distinct as they get, plus
        // the classifier's two terminators: the largest automaton a rule can have.
        let mut x = 0x2545_f491u32;
        let pats: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                (0..256)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        let mut refs: Vec<&[u8]> = pats.iter().map(|p| p.as_slice()).collect();
        refs.extend([&b"\r\n\r\n"[..], b"\n\n"]);
        let a = Owned::new(&refs, false);
        let states = a.0.states();
        assert!(states > 16_300 && states <= 16_391, "{states}");
        // The dense table this replaced: `states x classes` u16 transitions plus `out`.
        let dense = 16_391 * (256 + 1) * 2;
        assert_eq!(dense, 8_424_974);
        assert!(a.0.bytes() <= table_bytes(16_391));
        assert_eq!(table_bytes(16_391), 131_898);
        for p in &refs[..64] {
            assert!(a.find(&[b"xy", p, b"z"]).is_some());
        }
    }

    #[test]
    fn wide_fanout() {
        // A state with 256 children, and links into it from deep states.
        let all: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b'x', b]).collect();
        let mut refs: Vec<&[u8]> = all.iter().map(|p| p.as_slice()).collect();
        let long = vec![b'x'; 200];
        refs.push(&long);
        let a = Owned::new(&refs, false);
        for b in 0..=255u8 {
            let data = [b'x', b'x', b'x', b];
            assert_eq!(a.find(&[&data]), naive(&refs, &data, false), "{b}");
        }
        let mut data = vec![b'x'; 199];
        data.push(b'\x07');
        // "xx" (condition 120) is found first, "x\x07" (condition 7) at the end: the
        // first-added condition wins.
        assert_eq!(a.find(&[&data]), Some(7));
        assert_eq!(a.find(&[&data]), naive(&refs, &data, false));
    }

    /// How the kernel judges a connection's data as it arrives: at each arrival, resume
    /// the cached scan (if any) over the bytes not yet scanned, cache it if undecided.
    /// Returns the verdict at the end and the bytes stepped through in all.
    fn judge_arrivals(
        a: &Owned,
        cache: &mut ScanCache<Vec<Slot>>,
        key: u64,
        arrivals: &[&[u8]],
    ) -> (Option<usize>, usize) {
        let mut data = Vec::new();
        let mut stepped = 0;
        for chunk in arrivals {
            data.extend_from_slice(chunk);
            let mut scan = cache.take(key).unwrap_or_default();
            let from = scan.seen;
            scan.feed(&a.dfa(), &data[from..]);
            stepped += data.len() - from;
            if let Some(c) = scan.found() {
                return (Some(c), stepped);
            }
            cache.put(key, &scan);
        }
        (None, stepped)
    }

    #[test]
    fn cache_resumes_one_byte_segments_in_one_pass() {
        let a = Owned::new(&[b"Host: www.foo.com", b"Host: www.bar.com"], false);
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        req.extend(core::iter::repeat_n(b'x', 1800));
        req.extend_from_slice(b"\r\nHost: www.bar.com\r\n\r\n");
        let drip: Vec<&[u8]> = req.chunks(1).collect();
        let mut cache = ScanCache::new(vec![Slot::EMPTY; 64]);
        let (found, stepped) = judge_arrivals(&a, &mut cache, 7, &drip);
        assert_eq!(found, Some(1));
        // One pass (up to the match), where a scan from byte 0 at each arrival steps
        // through n^2 / 2 bytes.
        assert!(stepped <= req.len(), "{stepped}");
        // Decided: the slot is free again.
        assert_eq!(cache.get(7), None);
        // Without the cache (nothing fits), the same verdict at quadratic cost.
        let mut none = ScanCache::new(Vec::new());
        let (found, stepped) = judge_arrivals(&a, &mut none, 7, &drip);
        assert_eq!(found, Some(1));
        assert!(stepped > req.len() * req.len() / 3, "{stepped}");
    }

    #[test]
    fn cache_evicts_the_oldest_of_a_bucket_and_never_mixes_keys() {
        // One bucket: every key lands in it.
        let mut c = ScanCache::new(vec![Slot::EMPTY; WAYS]);
        let scan = |seen| Scan {
            state: seen as u16,
            best: NONE,
            seen,
        };
        for k in 1..=WAYS as u64 {
            c.put(k, &scan(k as usize));
        }
        // Key 1 is written again: key 2 is now the oldest and goes.
        c.put(1, &scan(10));
        c.put(99, &scan(99));
        assert_eq!(c.get(1), Some(scan(10)));
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(99), Some(scan(99)));
        for k in 3..=WAYS as u64 {
            assert_eq!(c.get(k), Some(scan(k as usize)));
        }
        // take returns the scan and frees its slot.
        assert_eq!(c.take(99), Some(scan(99)));
        assert_eq!(c.get(99), None);
        assert_eq!(c.take(99), None);
        c.put(99, &scan(98));
        assert_eq!(c.get(99), Some(scan(98)));
        // Cookie 0 (none) is never stored, a decided scan is not kept, nor one too long.
        c.put(0, &scan(5));
        assert_eq!(c.get(0), None);
        c.put(3, &Scan { best: 1, ..scan(3) });
        assert_eq!(c.get(3), None);
        c.put(4, &scan(70_000));
        assert_eq!(c.get(4), None);
    }

    use proptest::prelude::*;

    /// Feeds `data` in pieces ending at the sorted `cuts`.
    fn pieces<'d>(data: &'d [u8], cuts: &[usize]) -> Vec<&'d [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut v = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            v.push(&data[at..c]);
            at = c;
        }
        v
    }

    proptest! {
        #[test]
        fn matches_the_naive_search(
            pats in proptest::collection::vec(proptest::collection::vec(b'a'..b'e', 1..5), 1..8),
            data in proptest::collection::vec(prop_oneof![b'a'..b'f', Just(b'A')], 0..64),
            cut in 0usize..64,
            nocase in any::<bool>(),
        ) {
            let refs: Vec<&[u8]> = pats.iter().map(|p| p.as_slice()).collect();
            let a = Owned::new(&refs, nocase);
            let cut = cut.min(data.len());
            prop_assert_eq!(a.find(&[&data[..cut], &data[cut..]]), naive(&refs, &data, nocase));
        }

        #[test]
        fn any_bytes_any_split(
            pats in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![any::<u8>(), b'a'..b'd', b'A'..b'D'], 1..12),
                1..24,
            ),
            data in proptest::collection::vec(prop_oneof![any::<u8>(), b'a'..b'd', b'A'..b'D'], 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            plant in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..4),
            nocase in any::<bool>(),
        ) {
            let refs: Vec<&[u8]> = pats.iter().map(|p| p.as_slice()).collect();
            // Plant some of the strings (case flipped) so that matches are common.
            let mut data = data;
            for (i, at) in plant {
                let p = refs[i % refs.len()];
                let at = at % (data.len() + 1);
                data.splice(at..at, p.iter().map(|b| if at % 2 == 0 { b.to_ascii_uppercase() } else { *b }));
            }
            let a = Owned::new(&refs, nocase);
            let want = naive(&refs, &data, nocase);
            prop_assert_eq!(a.find(&[&data]), want);
            prop_assert_eq!(a.find(&pieces(&data, &cuts)), want);
            let drip: Vec<&[u8]> = data.chunks(1).collect();
            prop_assert_eq!(a.find(&drip), want);
        }

        /// Many connections dripping data through a small cache (evictions all the
        /// time): each gets the verdict of a scan of its whole data at once.
        #[test]
        fn cached_resumption_gives_the_verdict_of_one_scan(
            pats in proptest::collection::vec(proptest::collection::vec(b'a'..b'e', 1..5), 1..8),
            conns in proptest::collection::vec(
                (proptest::collection::vec(b'a'..b'f', 0..80), proptest::collection::vec(any::<usize>(), 0..10)),
                1..12,
            ),
            ways in 1usize..4,
        ) {
            let refs: Vec<&[u8]> = pats.iter().map(|p| p.as_slice()).collect();
            let a = Owned::new(&refs, false);
            let mut cache = ScanCache::new(vec![Slot::EMPTY; ways * WAYS]);
            // Interleave the connections' arrivals round-robin.
            let arrivals: Vec<Vec<&[u8]>> = conns.iter().map(|(d, cuts)| pieces(d, cuts)).collect();
            let mut data: Vec<Vec<u8>> = vec![Vec::new(); conns.len()];
            let mut verdict: Vec<Option<usize>> = vec![None; conns.len()];
            let longest = arrivals.iter().map(Vec::len).max().unwrap_or(0);
            for step in 0..longest {
                for (i, arr) in arrivals.iter().enumerate() {
                    let Some(chunk) = arr.get(step) else { continue };
                    if verdict[i].is_some() {
                        continue;
                    }
                    data[i].extend_from_slice(chunk);
                    let key = i as u64 + 1;
                    let mut scan = cache.take(key).unwrap_or_default();
                    let from = scan.seen;
                    prop_assert!(from <= data[i].len());
                    scan.feed(&a.dfa(), &data[i][from..]);
                    if scan.found().is_none() {
                        cache.put(key, &scan);
                    }
                    verdict[i] = scan.found();
                    // What a scan from byte 0 of the data so far decides (the module's
                    // way before the cache).
                    prop_assert_eq!(verdict[i], a.find(&[&data[i]]));
                }
            }
            // Those that got all their data: the first string of the whole data, unless
            // an earlier arrival decided already.
            for (i, (d, _)) in conns.iter().enumerate() {
                if data[i].len() == d.len() {
                    prop_assert_eq!(a.find(&[&data[i]]), naive(&refs, d, false));
                }
            }
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Content matching: one automaton for all the strings of a content rule.
//!
//! An Aho-Corasick automaton compiled to a dense DFA over byte classes. Bytes that occur
//! in no string share one class, so the table has `states x classes` entries, where
//! `classes` is one more than the number of distinct bytes in the strings. Each input
//! byte costs one table lookup whatever the number of strings: matching is a single pass
//! over the data, never a rescan per condition (the cost the paper measured).
//!
//! Priority: every state records the smallest condition index among the strings that
//! end there (directly or through its suffix links), so a scan reports the first-added
//! condition among all strings found, and can stop early once condition 0 is found.
//!
//! The builder allocates nothing: [`plan`] sizes the tables, the caller allocates them
//! (the kernel with `KVVec`, tests with `Vec`), and [`build`] fills them; [`Tables`] does
//! the three steps with a caller-given allocator. A [`Scan`] is a few bytes of state, so
//! a match can be resumed segment by segment.

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
    /// Number of states (at most one plus the total length of the strings).
    pub states: usize,
    /// Number of byte classes.
    pub classes: usize,
}

impl Plan {
    /// Entries of the transition table.
    pub const fn table_len(&self) -> usize {
        self.states * self.classes
    }
}

/// Why an automaton cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// More states than a `u16` can number.
    TooLarge,
    /// A table given to [`build`] is shorter than the plan says.
    ShortTable,
    /// An empty string.
    Empty,
}

/// Computes the byte classes into `map` and the table sizes for `patterns`.
pub fn plan<'p, I>(patterns: I, nocase: bool, map: &mut [u8; 256]) -> Result<Plan, BuildError>
where
    I: Iterator<Item = &'p [u8]>,
{
    let mut used = [false; 256];
    let mut states = 1usize;
    for p in patterns {
        if p.is_empty() {
            return Err(BuildError::Empty);
        }
        states += p.len();
        for b in p {
            used[usize::from(fold(*b, nocase))] = true;
        }
    }
    if states >= usize::from(NONE) {
        return Err(BuildError::TooLarge);
    }
    // Class 0 gathers the bytes of no string; if every byte value occurs, none is left
    // over and classes are numbered from 0. Either way there are at most 256.
    let all = used.iter().all(|u| *u);
    let mut classes = usize::from(!all);
    let mut class_of = [0u8; 256];
    for (b, u) in used.iter().enumerate() {
        if *u {
            class_of[b] = classes as u8;
            classes += 1;
        }
    }
    for (b, m) in map.iter_mut().enumerate() {
        *m = class_of[usize::from(fold(b as u8, nocase))];
    }
    Ok(Plan { states, classes })
}

/// Builds the automaton of `patterns` (string `i` is condition `i`) into `trans`
/// (`plan.table_len()` entries), `out` (`plan.states`), with `fail` and `queue`
/// (`plan.states` each) as scratch. `map` comes from [`plan`] on the same strings.
pub fn build<'p, I>(
    patterns: I,
    plan: &Plan,
    map: &[u8; 256],
    trans: &mut [u16],
    out: &mut [u16],
    fail: &mut [u16],
    queue: &mut [u16],
) -> Result<(), BuildError>
where
    I: Iterator<Item = &'p [u8]>,
{
    let (n, k) = (plan.states, plan.classes);
    if trans.len() < n * k || out.len() < n || fail.len() < n || queue.len() < n {
        return Err(BuildError::ShortTable);
    }
    trans[..n * k].iter_mut().for_each(|t| *t = NONE);
    out[..n].iter_mut().for_each(|o| *o = NONE);
    // The trie.
    let mut next = 1usize;
    for (i, p) in patterns.enumerate() {
        let mut s = 0usize;
        for b in p {
            let slot = s * k + usize::from(map[usize::from(*b)]);
            if trans[slot] == NONE {
                if next >= n {
                    return Err(BuildError::ShortTable);
                }
                trans[slot] = next as u16;
                next += 1;
            }
            s = usize::from(trans[slot]);
        }
        let i = u16::try_from(i).map_err(|_| BuildError::TooLarge)?;
        out[s] = out[s].min(i);
    }
    // Suffix links in breadth-first order, completing the DFA on the way.
    let (mut head, mut tail) = (0usize, 0usize);
    for t in trans[..k].iter_mut() {
        match *t {
            NONE => *t = 0,
            v => {
                fail[usize::from(v)] = 0;
                queue[tail] = v;
                tail += 1;
            }
        }
    }
    while head < tail {
        let u = usize::from(queue[head]);
        head += 1;
        let f = usize::from(fail[u]);
        out[u] = out[u].min(out[f]);
        for c in 0..k {
            let via_fail = trans[f * k + c];
            match trans[u * k + c] {
                NONE => trans[u * k + c] = via_fail,
                v => {
                    fail[usize::from(v)] = via_fail;
                    if tail >= n {
                        return Err(BuildError::ShortTable);
                    }
                    queue[tail] = v;
                    tail += 1;
                }
            }
        }
    }
    Ok(())
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
pub struct Tables<V> {
    map: [u8; 256],
    trans: V,
    out: V,
    classes: usize,
}

impl<V: core::ops::DerefMut<Target = [u16]>> Tables<V> {
    /// Builds the automaton of `patterns` (string `i` is condition `i`), allocating its
    /// tables and scratch space with `alloc(len)`: [`plan`], then [`build`].
    pub fn build<'p, I, E>(
        patterns: I,
        nocase: bool,
        mut alloc: impl FnMut(usize) -> Result<V, E>,
    ) -> Result<Self, TablesError<E>>
    where
        I: Iterator<Item = &'p [u8]> + Clone,
    {
        let mut map = [0u8; 256];
        let p = plan(patterns.clone(), nocase, &mut map).map_err(TablesError::Build)?;
        let mut trans = alloc(p.table_len()).map_err(TablesError::Alloc)?;
        let mut out = alloc(p.states).map_err(TablesError::Alloc)?;
        let mut fail = alloc(p.states).map_err(TablesError::Alloc)?;
        let mut queue = alloc(p.states).map_err(TablesError::Alloc)?;
        build(
            patterns, &p, &map, &mut trans, &mut out, &mut fail, &mut queue,
        )
        .map_err(TablesError::Build)?;
        Ok(Self {
            map,
            trans,
            out,
            classes: p.classes,
        })
    }

    /// The automaton, borrowed for matching.
    pub fn dfa(&self) -> Dfa<'_> {
        Dfa {
            map: &self.map,
            trans: &self.trans,
            out: &self.out,
            classes: self.classes,
        }
    }

    /// Number of states.
    pub fn states(&self) -> usize {
        self.out.len()
    }
}

/// A built automaton, borrowed.
#[derive(Clone, Copy)]
pub struct Dfa<'a> {
    /// Byte classes.
    pub map: &'a [u8; 256],
    /// Transitions, `states x classes`.
    pub trans: &'a [u16],
    /// Smallest condition index matched in each state, or [`NONE`].
    pub out: &'a [u16],
    /// Number of classes.
    pub classes: usize,
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
            let c = usize::from(dfa.map[usize::from(*b)]);
            s = dfa
                .trans
                .get(s * dfa.classes + c)
                .map_or(0, |t| usize::from(*t));
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

    use proptest::prelude::*;

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
    }
}

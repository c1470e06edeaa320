// SPDX-License-Identifier: GPL-2.0

//! Address conditions: IPv4 address/mask and IPv6 prefixes matched against a client.

/// The address a connection came from, as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// An IPv4 client on an IPv4 socket; the address in host byte order.
    V4(u32),
    /// An IPv6 client (possibly v4-mapped `::ffff:a.b.c.d`), network byte order.
    V6([u8; 16]),
}

impl Client {
    /// The IPv4 address of a v4 or v4-mapped client, in host byte order.
    pub fn ipv4(&self) -> Option<u32> {
        match *self {
            Client::V4(a) => Some(a),
            Client::V6(b) if b[..10] == [0; 10] && b[10] == 0xff && b[11] == 0xff => {
                Some(u32::from_be_bytes([b[12], b[13], b[14], b[15]]))
            }
            Client::V6(_) => None,
        }
    }
}

/// Why an address condition was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// The IPv6 prefix length is over 128.
    PrefixTooLong,
}

/// An address condition.
///
/// An IPv4 condition matches IPv4 clients and v4-mapped IPv6 clients; an IPv6 condition
/// matches IPv6 clients only (write `::ffff:a.b.c.d/104+` to target v4-mapped clients
/// explicitly). The stored address is normalized: bits outside the mask are cleared,
/// as `iptables` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// `(client & mask) == addr`, host byte order. Masks need not be contiguous.
    V4 {
        /// Address, already masked.
        addr: u32,
        /// Mask.
        mask: u32,
    },
    /// The first `len` bits of the client equal those of `addr`.
    V6 {
        /// Address with bits past `len` cleared.
        addr: [u8; 16],
        /// Prefix length in bits.
        len: u8,
    },
}

impl Prefix {
    /// An IPv4 condition from address and mask in host byte order.
    pub fn v4(addr: u32, mask: u32) -> Prefix {
        Prefix::V4 {
            addr: addr & mask,
            mask,
        }
    }

    /// An IPv6 condition from a prefix.
    pub fn v6(addr: [u8; 16], len: u8) -> Result<Prefix, PrefixError> {
        if len > 128 {
            return Err(PrefixError::PrefixTooLong);
        }
        let mut a = addr;
        for (i, byte) in a.iter_mut().enumerate() {
            let keep = (len as usize).saturating_sub(i * 8).min(8);
            *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        Ok(Prefix::V6 { addr: a, len })
    }

    /// Returns whether `client` satisfies this condition.
    pub fn matches(&self, client: &Client) -> bool {
        match (self, client) {
            (Prefix::V4 { addr, mask }, c) => c.ipv4().is_some_and(|a| a & mask == *addr),
            (Prefix::V6 { addr, len }, Client::V6(c)) => {
                let full = (*len / 8) as usize;
                if c[..full] != addr[..full] {
                    return false;
                }
                let rest = len % 8;
                rest == 0 || (c[full] ^ addr[full]) & (0xffu8 << (8 - rest)) == 0
            }
            (Prefix::V6 { .. }, Client::V4(_)) => false,
        }
    }
}

/// Length of a contiguous IPv4 mask (`255.255.0.0` -> 16), if it is contiguous.
pub fn mask_len(mask: u32) -> Option<u8> {
    let len = mask.leading_ones();
    (mask.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// One address condition with a prefix length in an [`Index`]: the prefix as a 128-bit
/// key with the bits past its length cleared (IPv4 in the low 32 bits), its family and
/// length, and its position in the rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    hi: u64,
    lo: u64,
    pos: u32,
    /// `len`, plus 256 for IPv6.
    tag: u16,
}

impl Entry {
    fn sort_key(&self) -> (u16, u64, u64, u32) {
        (self.tag, self.hi, self.lo, self.pos)
    }
}

/// The conditions of one family and one prefix length: `entries[start..end]`, sorted by
/// key, one per key (the lowest position among equal prefixes); `min` is the lowest
/// position among them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Group {
    tag: u16,
    start: u32,
    end: u32,
    min: u32,
}

/// An IPv4 condition whose mask is not contiguous, which no prefix length describes:
/// tried in order, after the groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Odd {
    addr: u32,
    mask: u32,
    pos: u32,
}

/// How much room [`Index::build`] needs for a list of conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Conditions with a prefix length (contiguous IPv4 masks and IPv6 prefixes).
    pub entries: usize,
    /// Distinct (family, prefix length) pairs among them.
    pub groups: usize,
    /// IPv4 conditions with a non-contiguous mask.
    pub odd: usize,
}

/// `addr` cut to its first `len` bits of `width`, as `(hi, lo)`.
fn cut(addr: u128, width: u32, len: u8) -> (u64, u64) {
    // The `width` low bits, less those past the first `len` of them (`len <= width`:
    // the shifts stay below 128 but for `len == width`, which keeps every bit).
    let field = u128::MAX >> (128 - width);
    let past = u128::MAX
        .checked_shr(128 - width + u32::from(len))
        .unwrap_or(0);
    let keep = field & !past;
    let k = addr & keep;
    ((k >> 64) as u64, k as u64)
}

/// The family and length of a group or entry (`tag`), and the client's key for it, if
/// the client can match that family.
fn client_key(tag: u16, c: &Client) -> Option<(u64, u64)> {
    let len = (tag & 0xff) as u8;
    if tag >= 256 {
        match c {
            Client::V6(b) => Some(cut(u128::from_be_bytes(*b), 128, len)),
            Client::V4(_) => None,
        }
    } else {
        c.ipv4().map(|a| cut(u128::from(a), 32, len))
    }
}

/// An index of a rule's address conditions that finds the first condition (in the order
/// they were added) that a client satisfies, at a cost that does not grow with their
/// number: one binary search per distinct (family, prefix length) pair, the pairs visited
/// in the order of their lowest position and given up as soon as none of them can beat
/// the best match found so far; then the non-contiguous IPv4 masks (rare), in order. The
/// answer is exactly that of trying every condition in order with [`Prefix::matches`]
/// (host property tests over IPv4, IPv6 and v4-mapped clients).
///
/// The storage comes from the caller (the kernel's vectors, tests' `Vec`), sized by
/// [`Index::sizes`]: 24 bytes per condition with a prefix length, 12 per non-contiguous
/// mask, 16 per distinct prefix length.
#[derive(Clone, Copy, Debug)]
pub struct Index<'a> {
    entries: &'a [Entry],
    groups: &'a [Group],
    odd: &'a [Odd],
}

impl<'a> Index<'a> {
    /// The room needed for `prefixes`.
    pub fn sizes(prefixes: impl Iterator<Item = Prefix>) -> Sizes {
        // Bit `len` of `lens4` (IPv4, 0..=32) or of `lens6` (IPv6, 0..=128).
        let (mut lens4, mut lens6) = (0u64, [0u64; 3]);
        let mut s = Sizes::default();
        for p in prefixes {
            match p {
                Prefix::V4 { mask, .. } => match mask_len(mask) {
                    Some(l) => {
                        s.entries += 1;
                        lens4 |= 1 << l;
                    }
                    None => s.odd += 1,
                },
                Prefix::V6 { len, .. } => {
                    s.entries += 1;
                    lens6[usize::from(len / 64)] |= 1 << (len % 64);
                }
            }
        }
        let ones: u32 = lens6.iter().map(|w| w.count_ones()).sum();
        s.groups = (lens4.count_ones() + ones) as usize;
        s
    }

    /// Builds the index of `prefixes`, each with its position in the rule, into storage
    /// of exactly the [`Index::sizes`] of the same list. Equal prefixes keep only the
    /// first: returns how many of `entries` the index uses (the caller may give the rest
    /// back), or `None` if the storage does not fit the list.
    pub fn build(
        prefixes: impl Iterator<Item = (u32, Prefix)>,
        entries: &mut [Entry],
        groups: &mut [Group],
        odd: &mut [Odd],
    ) -> Option<usize> {
        let (mut ne, mut no) = (0, 0);
        for (pos, p) in prefixes {
            let (tag, addr, width, len) = match p {
                Prefix::V4 { addr, mask } => match mask_len(mask) {
                    Some(l) => (u16::from(l), u128::from(addr), 32, l),
                    None => {
                        *odd.get_mut(no)? = Odd { addr, mask, pos };
                        no += 1;
                        continue;
                    }
                },
                Prefix::V6 { addr, len } => {
                    (256 + u16::from(len), u128::from_be_bytes(addr), 128, len)
                }
            };
            let (hi, lo) = cut(addr, width, len);
            *entries.get_mut(ne)? = Entry { hi, lo, pos, tag };
            ne += 1;
        }
        if ne != entries.len() || no != odd.len() {
            return None;
        }
        odd.sort_unstable_by_key(|o| o.pos);
        entries.sort_unstable_by_key(Entry::sort_key);
        // One entry per (family, length, key): the first of equal ones has the lowest
        // position.
        let mut used = 0;
        for i in 0..entries.len() {
            let e = entries[i];
            if used > 0 {
                let last = entries[used - 1];
                if (last.tag, last.hi, last.lo) == (e.tag, e.hi, e.lo) {
                    continue;
                }
            }
            entries[used] = e;
            used += 1;
        }
        // The groups: runs of one tag.
        let mut ng = 0;
        let mut start = 0;
        while start < used {
            let tag = entries[start].tag;
            let mut end = start;
            let mut min = u32::MAX;
            while end < used && entries[end].tag == tag {
                min = min.min(entries[end].pos);
                end += 1;
            }
            *groups.get_mut(ng)? = Group {
                tag,
                start: start as u32,
                end: end as u32,
                min,
            };
            ng += 1;
            start = end;
        }
        if ng != groups.len() {
            return None;
        }
        groups.sort_unstable_by_key(|g| g.min);
        Some(used)
    }

    /// A view of an index that [`Index::build`] made.
    pub fn new(entries: &'a [Entry], groups: &'a [Group], odd: &'a [Odd]) -> Self {
        Self {
            entries,
            groups,
            odd,
        }
    }

    /// The position of the first condition that `client` satisfies.
    pub fn lookup(&self, client: &Client) -> Option<u32> {
        let mut best = u32::MAX;
        for g in self.groups {
            if g.min >= best {
                // Sorted by `min`: no later group can do better either.
                break;
            }
            let Some(k) = client_key(g.tag, client) else {
                continue;
            };
            let run = self
                .entries
                .get(g.start as usize..g.end as usize)
                .unwrap_or(&[]);
            if let Some(e) = run
                .binary_search_by(|e| (e.hi, e.lo).cmp(&k))
                .ok()
                .and_then(|i| run.get(i))
            {
                best = best.min(e.pos);
            }
        }
        if let Some(a) = client.ipv4() {
            // In position order: the first that matches is the only candidate.
            if let Some(o) = self
                .odd
                .iter()
                .take_while(|o| o.pos < best)
                .find(|o| a & o.mask == o.addr)
            {
                best = o.pos;
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::{vec, vec::Vec};

    const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    fn mapped(a: u32) -> Client {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&a.to_be_bytes());
        Client::V6(b)
    }

    #[test]
    fn paper_subnet() {
        let p = Prefix::v4(v4(128, 143, 0, 0), v4(255, 255, 0, 0));
        assert!(p.matches(&Client::V4(v4(128, 143, 7, 9))));
        assert!(!p.matches(&Client::V4(v4(128, 141, 7, 9))));
        assert!(p.matches(&mapped(v4(128, 143, 1, 1))));
        assert!(!p.matches(&Client::V6([
            0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
        ])));
    }

    #[test]
    fn normalizes_host_bits() {
        assert_eq!(
            Prefix::v4(v4(10, 1, 2, 3), v4(255, 0, 0, 0)),
            Prefix::V4 {
                addr: v4(10, 0, 0, 0),
                mask: v4(255, 0, 0, 0)
            }
        );
        let p = Prefix::v6([0xff; 16], 12).unwrap();
        assert_eq!(
            p,
            Prefix::V6 {
                addr: [0xff, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                len: 12
            }
        );
        assert_eq!(Prefix::v6([0; 16], 129), Err(PrefixError::PrefixTooLong));
    }

    #[test]
    fn v6_prefixes() {
        let net = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let p = Prefix::v6(net, 32).unwrap();
        let mut c = net;
        c[15] = 7;
        assert!(p.matches(&Client::V6(c)));
        c[3] = 0xb9;
        assert!(!p.matches(&Client::V6(c)));
        assert!(!p.matches(&Client::V4(1)));
        assert!(Prefix::v6([0; 16], 0)
            .unwrap()
            .matches(&Client::V6([9; 16])));
        let p = Prefix::v6([0xab; 16], 128).unwrap();
        assert!(p.matches(&Client::V6([0xab; 16])));
        let mut d = [0xab; 16];
        d[15] = 0xaa;
        assert!(!p.matches(&Client::V6(d)));
    }

    #[test]
    fn mask_lengths() {
        assert_eq!(mask_len(v4(255, 255, 0, 0)), Some(16));
        assert_eq!(mask_len(0), Some(0));
        assert_eq!(mask_len(u32::MAX), Some(32));
        assert_eq!(mask_len(v4(255, 0, 255, 0)), None);
    }

    proptest::proptest! {
        #[test]
        fn v4_agrees_with_mapped(addr: u32, mask: u32, client: u32) {
            let p = Prefix::v4(addr, mask);
            proptest::prop_assert_eq!(p.matches(&Client::V4(client)), p.matches(&mapped(client)));
            proptest::prop_assert_eq!(p.matches(&Client::V4(client)), client & mask == addr & mask);
        }

        #[test]
        fn v6_agrees_with_u128(addr: u128, client: u128, len in 0u8..=128) {
            let p = Prefix::v6(addr.to_be_bytes(), len).unwrap();
            let m = if len == 0 { 0 } else { u128::MAX << (128 - len as u32) };
            proptest::prop_assert_eq!(p.matches(&Client::V6(client.to_be_bytes())), (addr ^ client) & m == 0);
        }
    }

    /// The in-order reference: the first condition `c` satisfies.
    fn first(conds: &[Prefix], c: &Client) -> Option<u32> {
        conds.iter().position(|p| p.matches(c)).map(|i| i as u32)
    }

    fn index_of(conds: &[Prefix]) -> (Vec<Entry>, Vec<Group>, Vec<Odd>) {
        let s = Index::sizes(conds.iter().copied());
        let (mut e, mut g, mut o) = (
            vec![Entry::default(); s.entries],
            vec![Group::default(); s.groups],
            vec![Odd::default(); s.odd],
        );
        let used = Index::build(
            conds
                .iter()
                .copied()
                .enumerate()
                .map(|(i, p)| (i as u32, p)),
            &mut e,
            &mut g,
            &mut o,
        )
        .expect("storage of the computed sizes fits");
        e.truncate(used);
        (e, g, o)
    }

    #[test]
    fn index_keeps_the_first_added() {
        let conds = [
            Prefix::v4(v4(10, 1, 0, 0), v4(255, 255, 0, 0)),
            Prefix::v4(v4(10, 0, 0, 0), v4(255, 0, 0, 0)),
            Prefix::v4(v4(10, 1, 0, 0), v4(255, 255, 0, 0)),
            Prefix::v4(v4(10, 0, 0, 5), v4(255, 0, 0, 255)),
            Prefix::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 32).unwrap(),
            Prefix::v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 2, 0, 0], 112).unwrap(),
        ];
        let (e, g, o) = index_of(&conds);
        assert_eq!(e.len(), 4, "the second 10.1/16 is not kept");
        assert_eq!(o.len(), 1);
        let ix = Index::new(&e, &g, &o);
        for c in [
            Client::V4(v4(10, 1, 2, 3)),
            Client::V4(v4(10, 2, 2, 5)),
            Client::V4(v4(11, 0, 0, 5)),
            mapped(v4(10, 2, 0, 9)),
            Client::V6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Client::V6([0x20, 1, 0xd, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ] {
            assert_eq!(ix.lookup(&c), first(&conds, &c), "{c:?}");
        }
        assert_eq!(ix.lookup(&Client::V4(v4(10, 1, 2, 3))), Some(0));
        assert_eq!(ix.lookup(&Client::V4(v4(10, 2, 2, 5))), Some(1));
        assert_eq!(ix.lookup(&mapped(v4(10, 2, 0, 9))), Some(1));
        assert_eq!(ix.lookup(&Client::V4(v4(11, 0, 0, 5))), None);
        // Storage of the wrong size is refused.
        let s = Index::sizes(conds.iter().copied());
        let mut short = vec![Entry::default(); s.entries - 1];
        let (mut gg, mut oo) = (
            vec![Group::default(); s.groups],
            vec![Odd::default(); s.odd],
        );
        let it = conds
            .iter()
            .copied()
            .enumerate()
            .map(|(i, p)| (i as u32, p));
        assert_eq!(Index::build(it, &mut short, &mut gg, &mut oo), None);
    }

    /// A condition drawn from few networks and lengths, so that clients often match
    /// several: IPv4 (some non-contiguous masks), IPv6, and IPv6 prefixes of the
    /// v4-mapped range.
    fn arb_prefix() -> impl proptest::strategy::Strategy<Value = Prefix> {
        use proptest::prelude::*;
        prop_oneof![
            (0u32..4, 0u32..=32).prop_map(|(n, l)| {
                let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
                Prefix::v4(v4(10, n as u8, 1, 2), mask)
            }),
            (0u32..4, any::<u32>()).prop_map(|(n, m)| Prefix::v4(v4(10, n as u8, 1, 2), m)),
            (0u8..3, 0u8..=128).prop_map(|(n, l)| {
                let mut a = [0x20, 1, 0xd, 0xb8, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
                a[8] = n;
                Prefix::v6(a, l).unwrap()
            }),
            (0u8..4, 80u8..=128).prop_map(|(n, l)| {
                Prefix::v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, n, 1, 2], l).unwrap()
            }),
        ]
    }

    fn arb_client() -> impl proptest::strategy::Strategy<Value = Client> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..4, any::<u16>()).prop_map(|(n, h)| Client::V4(v4(
                10,
                n,
                (h >> 8) as u8,
                h as u8
            ))),
            (0u8..4, any::<u16>()).prop_map(|(n, h)| mapped(v4(10, n, (h >> 8) as u8, h as u8))),
            (0u8..3, any::<u8>(), any::<u8>()).prop_map(|(n, x, y)| {
                let mut a = [0x20, 1, 0xd, 0xb8, n, 0, 0, 0, n, 0, 0, 0, 0, 0, x, y];
                a[13] = x ^ y;
                Client::V6(a)
            }),
            any::<u32>().prop_map(Client::V4),
            any::<[u8; 16]>().prop_map(Client::V6),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn index_agrees_with_the_in_order_scan(
            conds in proptest::collection::vec(arb_prefix(), 0..40),
            clients in proptest::collection::vec(arb_client(), 1..20),
        ) {
            let (e, g, o) = index_of(&conds);
            let ix = Index::new(&e, &g, &o);
            for c in &clients {
                proptest::prop_assert_eq!(ix.lookup(c), first(&conds, c), "{:?}", c);
            }
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Reading netlink attributes out of a byte buffer.
//!
//! The layout is the kernel's `struct nlattr`: a native-endian `u16` length that counts
//! the 4-byte header, a `u16` type whose top two bits are flags (`NLA_F_NESTED`,
//! `NLA_F_NET_BYTEORDER`), the payload, and padding to a multiple of 4 bytes.
//!
//! The module reads its requests with this: the netlink core has validated every
//! attribute against the family's policy (nested ones included) before a handler runs,
//! but nothing here relies on it. Every length is checked against the buffer, and a
//! malformed attribute ends the iteration.

/// Size of an attribute header.
pub const HDRLEN: usize = 4;
/// The bits of `nla_type` that are the type (the rest are flags).
pub const TYPE_MASK: u16 = 0x3fff;

/// One attribute: its type and its bytes, header included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Attribute type, flags masked off.
    pub ty: u16,
    /// The attribute, header included (`whole.as_ptr()` is the `struct nlattr`).
    pub whole: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.whole.get(HDRLEN..).unwrap_or(&[])
    }

    fn array<const N: usize>(&self) -> Option<[u8; N]> {
        self.payload().get(..N)?.try_into().ok()
    }

    /// The payload as a `u8`.
    pub fn u8(&self) -> Option<u8> {
        self.array().map(u8::from_ne_bytes)
    }

    /// The payload as a native-endian `u16`.
    pub fn u16(&self) -> Option<u16> {
        self.array().map(u16::from_ne_bytes)
    }

    /// The payload as a native-endian `u32`.
    pub fn u32(&self) -> Option<u32> {
        self.array().map(u32::from_ne_bytes)
    }

    /// The payload as a native-endian `u64`.
    pub fn u64(&self) -> Option<u64> {
        self.array().map(u64::from_ne_bytes)
    }

    /// The first 16 bytes of the payload (an IPv6 address).
    pub fn bytes16(&self) -> Option<[u8; 16]> {
        self.array()
    }

    /// The attributes nested in this one.
    pub fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.payload())
    }
}

/// The attributes of a buffer, in order.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// Iterates over the attributes in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let rest = self.rest;
        let (len, ty) = match rest {
            [l0, l1, t0, t1, ..] => (
                usize::from(u16::from_ne_bytes([*l0, *l1])),
                u16::from_ne_bytes([*t0, *t1]) & TYPE_MASK,
            ),
            _ => return None,
        };
        let Some(whole) = rest.get(..len).filter(|_| len >= HDRLEN) else {
            self.rest = &[];
            return None;
        };
        // The last attribute's padding may be missing.
        let next = (len + 3) & !3;
        self.rest = rest.get(next..).unwrap_or(&[]);
        Some(Attr { ty, whole })
    }
}

/// The last attribute of each type `1..N` in a buffer, as `nla_parse()` keeps them.
#[derive(Clone, Debug)]
pub struct Table<'a, const N: usize> {
    slots: [Option<Attr<'a>>; N],
}

impl<'a, const N: usize> Table<'a, N> {
    /// Indexes the attributes of `buf`; types of `N` and above are ignored.
    pub fn parse(buf: &'a [u8]) -> Self {
        let mut slots = [None; N];
        for a in Attrs::new(buf) {
            if let Some(s) = slots.get_mut(usize::from(a.ty)) {
                *s = Some(a);
            }
        }
        Self { slots }
    }

    /// The attribute of type `ty`, if present.
    pub fn get(&self, ty: u16) -> Option<Attr<'a>> {
        self.slots.get(usize::from(ty)).copied().flatten()
    }

    /// The `u8` attribute of type `ty`, if present and long enough.
    pub fn u8(&self, ty: u16) -> Option<u8> {
        self.get(ty)?.u8()
    }

    /// The `u16` attribute of type `ty`, if present and long enough.
    pub fn u16(&self, ty: u16) -> Option<u16> {
        self.get(ty)?.u16()
    }

    /// The `u32` attribute of type `ty`, if present and long enough.
    pub fn u32(&self, ty: u16) -> Option<u32> {
        self.get(ty)?.u32()
    }

    /// The `u64` attribute of type `ty`, if present and long enough.
    pub fn u64(&self, ty: u16) -> Option<u64> {
        self.get(ty)?.u64()
    }

    /// Whether an attribute of type `ty` is present.
    pub fn has(&self, ty: u16) -> bool {
        self.get(ty).is_some()
    }

    /// Types present, in increasing order.
    pub fn types(&self) -> impl Iterator<Item = u16> + '_ {
        (0..N as u16).filter(|t| self.has(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn put(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
        buf.extend_from_slice(&((HDRLEN + payload.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(payload);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    #[test]
    fn iterates_and_reads() {
        let mut b = Vec::new();
        put(&mut b, 1, &80u16.to_ne_bytes());
        put(&mut b, 2, &[3]);
        put(&mut b, 0x8000 | 5, &7u32.to_ne_bytes());
        put(&mut b, 1, &81u16.to_ne_bytes());
        let v: Vec<_> = Attrs::new(&b).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].u16(), Some(80));
        assert_eq!(v[1].u8(), Some(3));
        assert_eq!(v[2].ty, 5);
        assert_eq!(v[2].u32(), Some(7));
        assert_eq!(v[1].u32(), None);
        let t: Table<'_, 8> = Table::parse(&b);
        assert_eq!(t.u16(1), Some(81));
        assert_eq!(t.u32(5), Some(7));
        assert_eq!(t.u32(2), None);
        assert!(!t.has(3));
        assert_eq!(t.types().collect::<Vec<_>>(), [1, 2, 5]);
    }

    #[test]
    fn nests() {
        let mut inner = Vec::new();
        put(&mut inner, 10, &8080u16.to_ne_bytes());
        put(&mut inner, 16, b"www.foo.com");
        let mut b = Vec::new();
        put(&mut b, 11, &inner);
        let a = Attrs::new(&b).next().unwrap();
        let t: Table<'_, 20> = Table::parse(a.payload());
        assert_eq!(t.get(16).unwrap().payload(), b"www.foo.com");
        assert_eq!(a.nested().count(), 2);
    }

    #[test]
    fn stops_at_malformed() {
        let mut b = Vec::new();
        put(&mut b, 1, &[1, 2]);
        // A length below the header size, then one past the end.
        for bad in [[2u8, 0, 1, 0], [200, 0, 1, 0]] {
            let mut c = b.clone();
            c.extend_from_slice(&bad);
            c.extend_from_slice(&[0; 8]);
            assert_eq!(Attrs::new(&c).count(), 1);
        }
        assert_eq!(Attrs::new(&b[..3]).count(), 0);
        // The last attribute without its padding.
        let mut d = Vec::new();
        put(&mut d, 2, &[9]);
        assert_eq!(Attrs::new(&d[..5]).next().and_then(|a| a.u8()), Some(9));
    }
}

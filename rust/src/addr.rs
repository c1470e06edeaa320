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

#[cfg(test)]
mod tests {
    use super::*;

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
}

// SPDX-License-Identifier: GPL-2.0

//! Chain validation: an outgoing port may be another rule's incoming port.
//!
//! The forwarding hook follows chains inside the kernel, recursively, in softirq. A cycle
//! would therefore recurse without end, and a long chain would eat the softirq stack. The
//! module refuses, at configuration time, any change after which some connection could
//! cross a cycle (`ELOOP`) or more than [`crate::abi::limits::MAX_CHAIN_DEPTH`] rules.

/// Why a rule graph is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// Following outgoing ports from this port comes back to it.
    Cycle(u16),
    /// A connection could cross more rules than the limit.
    TooDeep(u16),
}

/// Checks the graph where `rules` lists every rule's incoming port and `targets(port)`
/// yields the outgoing ports (default and conditions) of the rule on `port`.
///
/// Runs in O(rules * depth * fan-out) without allocating: a depth-first walk bounded by
/// `max_depth`, so it terminates on any input.
pub fn check<R, T, I>(rules: R, targets: &T, max_depth: usize) -> Result<(), ChainError>
where
    R: IntoIterator<Item = u16>,
    T: Fn(u16) -> Option<I>,
    I: Iterator<Item = u16>,
{
    for start in rules {
        walk(start, start, targets, 1, max_depth)?;
    }
    Ok(())
}

fn walk<T, I>(
    start: u16,
    port: u16,
    targets: &T,
    depth: usize,
    max: usize,
) -> Result<(), ChainError>
where
    T: Fn(u16) -> Option<I>,
    I: Iterator<Item = u16>,
{
    let Some(outs) = targets(port) else {
        return Ok(());
    };
    for next in outs {
        if next == start {
            return Err(ChainError::Cycle(start));
        }
        if targets(next).is_some() {
            if depth >= max {
                return Err(ChainError::TooDeep(start));
            }
            walk(start, next, targets, depth + 1, max)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(
        edges: &'static [(u16, &'static [u16])],
    ) -> impl Fn(u16) -> Option<core::iter::Copied<core::slice::Iter<'static, u16>>> {
        move |p| {
            edges
                .iter()
                .find(|(r, _)| *r == p)
                .map(|(_, o)| o.iter().copied())
        }
    }

    #[test]
    fn chains_and_cycles() {
        let ok = graph(&[(80, &[81, 8080]), (81, &[82, 8081]), (82, &[8082])]);
        assert_eq!(check([80, 81, 82], &ok, 8), Ok(()));
        assert_eq!(check([80, 81, 82], &ok, 2), Err(ChainError::TooDeep(80)));
        let cyc = graph(&[(80, &[81]), (81, &[80])]);
        assert_eq!(check([80, 81], &cyc, 8), Err(ChainError::Cycle(80)));
        let selfloop = graph(&[(80, &[80])]);
        assert_eq!(check([80], &selfloop, 8), Err(ChainError::Cycle(80)));
        // A cycle not through the start port is found from a port on it.
        let inner = graph(&[(80, &[81]), (81, &[82]), (82, &[81])]);
        assert!(check([80, 81, 82], &inner, 8).is_err());
    }
}

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
    /// More rules than the scratch space given.
    TooMany,
}

/// Checks the graph where `ports` lists every rule's incoming port and `targets(port)`
/// yields the outgoing ports (default and conditions) of the rule on `port`. `memo` is
/// scratch space of `ports.len()` bytes.
///
/// A depth-first walk that remembers the height of every rule it finished, so each rule
/// and each edge is visited once: O(rules + conditions), whatever the fan-out, and the
/// recursion never goes deeper than `max_depth + 1`. Allocation-free.
pub fn check<T, I>(
    ports: &[u16],
    targets: &T,
    memo: &mut [u8],
    max_depth: usize,
) -> Result<(), ChainError>
where
    T: Fn(u16) -> Option<I>,
    I: Iterator<Item = u16>,
{
    if memo.len() < ports.len() {
        return Err(ChainError::TooMany);
    }
    // Heights are stored in a byte next to the in-progress mark.
    let max_depth = max_depth.min(usize::from(IN_PROGRESS) - 1);
    memo.iter_mut().for_each(|m| *m = UNKNOWN);
    for (i, p) in ports.iter().enumerate() {
        if memo[i] == UNKNOWN {
            height(ports, i, targets, memo, 1, max_depth).map_err(|e| e.at(*p))?;
        }
    }
    Ok(())
}

const UNKNOWN: u8 = 0;
const IN_PROGRESS: u8 = u8::MAX;

enum Found {
    Cycle,
    TooDeep,
}

impl Found {
    fn at(self, port: u16) -> ChainError {
        match self {
            Found::Cycle => ChainError::Cycle(port),
            Found::TooDeep => ChainError::TooDeep(port),
        }
    }
}

/// The number of rules on the longest path starting at rule `i` (reached at `depth`).
fn height<T, I>(
    ports: &[u16],
    i: usize,
    targets: &T,
    memo: &mut [u8],
    depth: usize,
    max: usize,
) -> Result<u8, Found>
where
    T: Fn(u16) -> Option<I>,
    I: Iterator<Item = u16>,
{
    if depth > max {
        return Err(Found::TooDeep);
    }
    memo[i] = IN_PROGRESS;
    let mut below = 0u8;
    for next in targets(ports[i]).into_iter().flatten() {
        let Some(j) = ports.iter().position(|p| *p == next) else {
            continue;
        };
        let h = match memo[j] {
            IN_PROGRESS => return Err(Found::Cycle),
            UNKNOWN => height(ports, j, targets, memo, depth + 1, max)?,
            h => h,
        };
        if depth + usize::from(h) > max {
            return Err(Found::TooDeep);
        }
        below = below.max(h);
    }
    memo[i] = below + 1;
    Ok(below + 1)
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

    fn run<T, I>(ports: &[u16], g: &T, max: usize) -> Result<(), ChainError>
    where
        T: Fn(u16) -> Option<I>,
        I: Iterator<Item = u16>,
    {
        let mut memo = [0u8; 64];
        check(ports, g, &mut memo[..ports.len()], max)
    }

    #[test]
    fn chains_and_cycles() {
        let ok = graph(&[(80, &[81, 8080]), (81, &[82, 8081]), (82, &[8082])]);
        assert_eq!(run(&[80, 81, 82], &ok, 8), Ok(()));
        assert_eq!(run(&[80, 81, 82], &ok, 3), Ok(()));
        assert_eq!(run(&[80, 81, 82], &ok, 2), Err(ChainError::TooDeep(80)));
        // Depth counts from every start, whichever rule is walked first.
        assert_eq!(run(&[82, 81, 80], &ok, 2), Err(ChainError::TooDeep(80)));
        let cyc = graph(&[(80, &[81]), (81, &[80])]);
        assert_eq!(run(&[80, 81], &cyc, 8), Err(ChainError::Cycle(80)));
        let selfloop = graph(&[(80, &[80])]);
        assert_eq!(run(&[80], &selfloop, 8), Err(ChainError::Cycle(80)));
        // A cycle not through the start port is found too.
        let inner = graph(&[(80, &[81]), (81, &[82]), (82, &[81])]);
        assert_eq!(run(&[80, 81, 82], &inner, 8), Err(ChainError::Cycle(80)));
    }

    #[test]
    fn wide_fan_out_is_linear() {
        // Eight rules, each sending 1,000 conditions to the next: a walk without memory
        // would follow 1000^7 paths.
        static NEXT: [[u16; 1000]; 8] = {
            let mut t = [[0u16; 1000]; 8];
            let mut r = 0;
            while r < 8 {
                let mut c = 0;
                while c < 1000 {
                    t[r][c] = if r == 7 { 9000 } else { 101 + r as u16 };
                    c += 1;
                }
                r += 1;
            }
            t
        };
        let g = |p: u16| {
            (100..108)
                .contains(&p)
                .then(|| NEXT[usize::from(p - 100)].iter().copied())
        };
        let ports = [100, 101, 102, 103, 104, 105, 106, 107];
        assert_eq!(run(&ports, &g, 8), Ok(()));
        assert_eq!(run(&ports, &g, 7), Err(ChainError::TooDeep(100)));
        assert_eq!(check(&ports, &g, &mut [0; 4], 8), Err(ChainError::TooMany));
    }
}

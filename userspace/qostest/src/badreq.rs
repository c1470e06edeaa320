// SPDX-License-Identifier: GPL-2.0

//! Requests the tools never send, built from the ABI of `rust/src/abi.rs`: each must be
//! refused with the errno and the blamed attribute given here (the scenario
//! `11-netlink-raw` checks afterwards that nothing was created). Commands, attribute
//! types, flags and limits are the ABI's constants, so a renumbering moves the cases
//! with it; the bad values are derived from the limits they break (one past the highest
//! type, the first unknown flag bit, one past a cap).

use crate::fuzz::{emit, Node};
use anyhow::{bail, Result};
use nix::errno::Errno;
use openqos::abi::abi::{
    attr, cmd, group_flags, group_type, limits, policy, replace_flags, rule_flags, rule_type,
};

/// `NLA_F_NESTED`: the type of a nested attribute carries it.
const NESTED: u16 = 1 << 15;

/// The attributes of one request, as `(type, payload)`; a type with [`NESTED`] is sent
/// as a nested attribute.
#[derive(Default)]
struct Req(Vec<(u16, Vec<u8>)>);

impl Req {
    fn u8(mut self, ty: u16, v: u8) -> Self {
        self.0.push((ty, vec![v]));
        self
    }
    fn u16(mut self, ty: u16, v: u16) -> Self {
        self.0.push((ty, v.to_ne_bytes().to_vec()));
        self
    }
    fn u32(mut self, ty: u16, v: u32) -> Self {
        self.0.push((ty, v.to_ne_bytes().to_vec()));
        self
    }
    fn u64(mut self, ty: u16, v: u64) -> Self {
        self.0.push((ty, v.to_ne_bytes().to_vec()));
        self
    }
    fn bytes(mut self, ty: u16, v: &[u8]) -> Self {
        self.0.push((ty, v.to_vec()));
        self
    }
    /// `ty` holding `inner`'s attributes, flagged nested (`nested`) or not.
    fn nest(mut self, ty: u16, nested: bool, inner: Req) -> Self {
        let nodes: Vec<Node> = inner.0.into_iter().map(|(t, v)| Node::Leaf(t, v)).collect();
        let mut payload = Vec::new();
        emit(&nodes, &mut payload, &mut Vec::new());
        self.0
            .push((if nested { ty | NESTED } else { ty }, payload));
        self
    }
}

/// What the kernel must answer.
enum Want {
    /// Refused with this errno, blaming this attribute (`None`: none named), with an
    /// extack message that starts with the given text (`""`: any message).
    Refused(Errno, Option<u16>, &'static str),
    /// Refused with this errno by the generic netlink core, before the family's policy
    /// or handlers (no attribute, no message).
    Errno(Errno),
    /// Accepted.
    Ok,
}

struct Case {
    what: &'static str,
    cmd: u8,
    req: Req,
    want: Want,
}

fn refused(what: &'static str, cmd: u8, req: Req, e: Errno, at: Option<u16>) -> Case {
    Case {
        what,
        cmd,
        req,
        want: Want::Refused(e, at, ""),
    }
}

/// A valid address rule on 80 (to 81) inside a rule set, less what a case leaves out.
fn rule(port: u16) -> Req {
    Req::default()
        .u16(attr::PORT, port)
        .u8(attr::RULE_TYPE, rule_type::ADDRESS)
}

/// Refusals that need no rule: rule creation, deletion, conditions, rule sets, commands.
fn rules() -> Vec<Case> {
    use Errno::{EINVAL, EOPNOTSUPP, ERANGE};
    let a = rule_type::ADDRESS;
    let ok_rule = || rule(80).u16(attr::DEFAULT_PORT, 81);
    vec![
        refused(
            "missing port",
            cmd::RULE_NEW,
            Req::default()
                .u8(attr::RULE_TYPE, a)
                .u16(attr::DEFAULT_PORT, 80),
            EINVAL,
            Some(attr::PORT),
        ),
        refused(
            "missing default port",
            cmd::RULE_NEW,
            rule(80),
            EINVAL,
            Some(attr::DEFAULT_PORT),
        ),
        refused(
            "port 0",
            cmd::RULE_NEW,
            rule(0).u16(attr::DEFAULT_PORT, 80),
            ERANGE,
            Some(attr::PORT),
        ),
        refused(
            "default port 0",
            cmd::RULE_NEW,
            rule(80).u16(attr::DEFAULT_PORT, 0),
            ERANGE,
            Some(attr::DEFAULT_PORT),
        ),
        refused(
            "rule type past the last",
            cmd::RULE_NEW,
            Req::default()
                .u16(attr::PORT, 80)
                .u8(attr::RULE_TYPE, rule_type::MAX + 1)
                .u16(attr::DEFAULT_PORT, 81),
            ERANGE,
            Some(attr::RULE_TYPE),
        ),
        refused(
            "unknown rule flag",
            cmd::RULE_NEW,
            ok_rule().u32(attr::RULE_FLAGS, (rule_flags::ALL + 1).next_power_of_two()),
            ERANGE,
            Some(attr::RULE_FLAGS),
        ),
        refused(
            "short port",
            cmd::RULE_NEW,
            Req::default()
                .u8(attr::PORT, 80)
                .u8(attr::RULE_TYPE, a)
                .u16(attr::DEFAULT_PORT, 81),
            EINVAL,
            Some(attr::PORT),
        ),
        refused(
            "unknown attribute",
            cmd::RULE_NEW,
            ok_rule().u8(attr::MAX + 1, 1),
            EINVAL,
            None,
        ),
        refused(
            "condition outside a rule set",
            cmd::RULE_NEW,
            ok_rule().u8(attr::COND, 1),
            EINVAL,
            Some(attr::COND),
        ),
        refused(
            "attribute of another command",
            cmd::RULE_DEL,
            Req::default().u16(attr::PORT, 80).u16(attr::OUT_PORT, 81),
            EINVAL,
            Some(attr::OUT_PORT),
        ),
        refused(
            "condition index 0",
            cmd::COND_DEL,
            Req::default().u16(attr::PORT, 80).u32(attr::COND_INDEX, 0),
            ERANGE,
            Some(attr::COND_INDEX),
        ),
        refused(
            "condition index over the cap",
            cmd::COND_DEL,
            Req::default()
                .u16(attr::PORT, 80)
                .u32(attr::COND_INDEX, limits::MAX_ADDR_CONDS as u32 + 1),
            ERANGE,
            Some(attr::COND_INDEX),
        ),
        // Rule sets: nested rules are validated as strictly as top-level attributes.
        refused(
            "rule without default port",
            cmd::RULESET_REPLACE,
            Req::default().nest(attr::RULE, true, rule(80)),
            EINVAL,
            Some(attr::DEFAULT_PORT),
        ),
        refused(
            "rule without NLA_F_NESTED",
            cmd::RULESET_REPLACE,
            Req::default().nest(attr::RULE, false, ok_rule()),
            EINVAL,
            Some(attr::RULE),
        ),
        refused(
            "port 0 inside a rule",
            cmd::RULESET_REPLACE,
            Req::default().nest(attr::RULE, true, rule(0).u16(attr::DEFAULT_PORT, 81)),
            ERANGE,
            Some(attr::PORT),
        ),
        refused(
            "unknown replace flag",
            cmd::RULESET_REPLACE,
            Req::default().u32(
                attr::REPLACE_FLAGS,
                (replace_flags::ALL + 1).next_power_of_two(),
            ),
            ERANGE,
            Some(attr::REPLACE_FLAGS),
        ),
        refused(
            "cond-index inside a rule",
            cmd::RULESET_REPLACE,
            Req::default().nest(attr::RULE, true, ok_rule().u32(attr::COND_INDEX, 1)),
            EINVAL,
            Some(attr::COND_INDEX),
        ),
        Case {
            what: "rule-more without a rule before it",
            cmd: cmd::RULESET_REPLACE,
            req: Req::default().nest(attr::RULE_MORE, true, Req::default().u16(attr::PORT, 80)),
            want: Want::Refused(EINVAL, Some(attr::RULE_MORE), "rule-more continues"),
        },
        Case {
            what: "rule-more of another port",
            cmd: cmd::RULESET_REPLACE,
            req: Req::default().nest(attr::RULE, true, ok_rule()).nest(
                attr::RULE_MORE,
                true,
                Req::default().u16(attr::PORT, 81),
            ),
            want: Want::Refused(EINVAL, Some(attr::PORT), "rule-more continues"),
        },
        Case {
            what: "unknown command",
            cmd: cmd::MAX + 1,
            req: Req::default(),
            want: Want::Errno(EOPNOTSUPP),
        },
    ]
}

/// Refusals that need the address rule 4500 (to 4501): condition matchers, then socket
/// groups; last, one well-formed raw condition that must be accepted.
fn conditions() -> Vec<Case> {
    use Errno::{EINVAL, ENOENT, ERANGE};
    let cond = || {
        Req::default()
            .u16(attr::PORT, 4500)
            .u16(attr::OUT_PORT, 4502)
    };
    let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let group = |ty: u8| {
        Req::default()
            .u32(attr::GROUP_ID, 1)
            .u8(attr::GROUP_TYPE, ty)
    };
    vec![
        refused(
            "short addr6",
            cmd::COND_NEW,
            cond().bytes(attr::ADDR6, &v6[..4]).u8(attr::PREFIX6, 32),
            ERANGE,
            Some(attr::ADDR6),
        ),
        refused(
            "prefix6 past 128",
            cmd::COND_NEW,
            cond().bytes(attr::ADDR6, &v6).u8(attr::PREFIX6, 129),
            ERANGE,
            Some(attr::PREFIX6),
        ),
        refused(
            "addr4 without mask4",
            cmd::COND_NEW,
            cond().u32(attr::ADDR4, 10),
            EINVAL,
            Some(attr::ADDR4),
        ),
        refused(
            "mask4 without addr4",
            cmd::COND_NEW,
            cond().u32(attr::MASK4, 255),
            EINVAL,
            Some(attr::MASK4),
        ),
        refused(
            "v4 and v6 matcher",
            cmd::COND_NEW,
            cond()
                .u32(attr::ADDR4, 10)
                .u32(attr::MASK4, 255)
                .bytes(attr::ADDR6, &v6)
                .u8(attr::PREFIX6, 32),
            EINVAL,
            Some(attr::ADDR6),
        ),
        Case {
            what: "no matcher",
            cmd: cmd::COND_NEW,
            req: cond(),
            want: Want::Refused(EINVAL, None, "a condition needs"),
        },
        refused(
            "group id 0",
            cmd::GROUP_NEW,
            Req::default()
                .u32(attr::GROUP_ID, 0)
                .u8(attr::GROUP_TYPE, group_type::RATE)
                .u64(attr::RATE, 10),
            ERANGE,
            Some(attr::GROUP_ID),
        ),
        refused(
            "group type past the last",
            cmd::GROUP_NEW,
            group(group_type::MAX + 1).u64(attr::RATE, 10),
            ERANGE,
            Some(attr::GROUP_TYPE),
        ),
        refused(
            "rate as u32",
            cmd::GROUP_NEW,
            group(group_type::RATE).u32(attr::RATE, 10),
            EINVAL,
            Some(attr::RATE),
        ),
        refused(
            "rate 0",
            cmd::GROUP_NEW,
            group(group_type::RATE).u64(attr::RATE, 0),
            ERANGE,
            Some(attr::RATE),
        ),
        refused(
            "rate over the cap",
            cmd::GROUP_NEW,
            group(group_type::OUTPUT).u64(attr::RATE, limits::MAX_RATE + 1),
            ERANGE,
            Some(attr::RATE),
        ),
        refused(
            "unknown group flag",
            cmd::GROUP_NEW,
            group(group_type::OUTPUT).u64(attr::RATE, 10).u32(
                attr::GROUP_FLAGS,
                (group_flags::ALL + 1).next_power_of_two(),
            ),
            ERANGE,
            Some(attr::GROUP_FLAGS),
        ),
        refused(
            "rate group without rate",
            cmd::GROUP_NEW,
            group(group_type::RATE),
            EINVAL,
            Some(attr::RATE),
        ),
        refused(
            "ratio group with burst",
            cmd::GROUP_NEW,
            group(group_type::RATIO).u64(attr::BURST, 5),
            EINVAL,
            Some(attr::BURST),
        ),
        refused(
            "member in a request",
            cmd::GROUP_NEW,
            group(group_type::RATIO).u8(attr::MEMBER, 1),
            EINVAL,
            Some(attr::MEMBER),
        ),
        refused(
            "port of a missing group",
            cmd::GROUP_PORT_ADD,
            Req::default().u32(attr::GROUP_ID, 7).u16(attr::PORT, 9000),
            ENOENT,
            Some(attr::GROUP_ID),
        ),
        refused(
            "weight without port",
            cmd::GROUP_SET,
            Req::default().u32(attr::GROUP_ID, 7).u16(attr::WEIGHT, 3),
            EINVAL,
            Some(attr::WEIGHT),
        ),
        Case {
            what: "valid raw condition",
            cmd: cmd::COND_NEW,
            req: cond().u32(attr::ADDR4, 10).u32(attr::MASK4, 255),
            want: Want::Ok,
        },
    ]
}

/// Content rules (scenario 14-content, with its content rule on 90 and no rule on 94):
/// the kernel checks strings and timeouts as `tcpchains` does, for other callers.
fn content() -> Vec<Case> {
    use Errno::{EINVAL, ERANGE};
    let cond = || Req::default().u16(attr::PORT, 90).u16(attr::OUT_PORT, 9081);
    vec![
        refused(
            "empty string",
            cmd::COND_NEW,
            cond().bytes(attr::PATTERN, b""),
            ERANGE,
            Some(attr::PATTERN),
        ),
        Case {
            what: "string with a NUL",
            cmd: cmd::COND_NEW,
            req: cond().bytes(attr::PATTERN, b"a\0bc"),
            want: Want::Refused(
                EINVAL,
                Some(attr::PATTERN),
                "a content string may not contain NUL",
            ),
        },
        refused(
            "data timeout on an address rule",
            cmd::RULE_NEW,
            rule(94)
                .u16(attr::DEFAULT_PORT, 9080)
                .u32(attr::DATA_TIMEOUT_MS, 500),
            EINVAL,
            Some(attr::DATA_TIMEOUT_MS),
        ),
    ]
}

/// Leases (scenario 28-group-lease, with its rate group 1 and ratio group 2 holding port
/// 8602).
fn lease() -> Vec<Case> {
    vec![
        refused(
            "lease below the minimum",
            cmd::GROUP_SET,
            Req::default()
                .u32(attr::GROUP_ID, 1)
                .u64(attr::RATE, 5)
                .u32(attr::LEASE_MS, limits::MIN_LEASE_MS - 1),
            Errno::ERANGE,
            Some(attr::LEASE_MS),
        ),
        Case {
            what: "weight with a lease",
            cmd: cmd::GROUP_SET,
            req: Req::default()
                .u32(attr::GROUP_ID, 2)
                .u16(attr::PORT, 8602)
                .u16(attr::WEIGHT, 3)
                .u32(attr::LEASE_MS, 1000),
            want: Want::Refused(
                Errno::EINVAL,
                Some(attr::WEIGHT),
                "a member's weight and a rate, burst or lease",
            ),
        },
    ]
}

/// Mutations by a caller without `CAP_NET_ADMIN`: refused with `EPERM` before any
/// parsing.
fn unprivileged() -> Vec<Case> {
    let eperm = Want::Errno(Errno::EPERM);
    vec![
        Case {
            what: "unprivileged flush",
            cmd: cmd::FLUSH,
            req: Req::default(),
            want: eperm,
        },
        Case {
            what: "unprivileged delete",
            cmd: cmd::RULE_DEL,
            req: Req::default().u16(attr::PORT, 4500),
            want: Want::Errno(Errno::EPERM),
        },
        Case {
            what: "unprivileged prioritized queue",
            cmd: cmd::PRIO_SET,
            req: Req::default().u16(attr::PORT, 4501),
            want: Want::Errno(Errno::EPERM),
        },
        Case {
            what: "unprivileged prioritized queue removal",
            cmd: cmd::PRIO_DEL,
            req: Req::default().u16(attr::PORT, 4501),
            want: Want::Errno(Errno::EPERM),
        },
    ]
}

/// The phases of `qostest badreq`.
pub const PHASES: [&str; 5] = ["rules", "conditions", "unprivileged", "content", "lease"];

/// Sends every case of `phase`; prints a line for each wrong answer and returns how many
/// requests got the answer they must.
pub fn run(phase: &str) -> Result<usize> {
    let cases = match phase {
        "rules" => rules(),
        "conditions" => conditions(),
        "unprivileged" => unprivileged(),
        "content" => content(),
        "lease" => lease(),
        _ => bail!("unknown phase '{phase}' (one of {})", PHASES.join(", ")),
    };
    let mut c = openqos::Client::connect()?;
    let (mut right, mut wrong) = (0, 0);
    for case in &cases {
        let got = c.request_unchecked(case.cmd, &case.req.0);
        let verdict = match (&case.want, &got) {
            (Want::Ok, Ok(())) => Ok(()),
            (Want::Errno(e), Err(openqos::Error::Kernel { errno, .. })) if *errno == *e as i32 => {
                Ok(())
            }
            (Want::Errno(e), Err(err)) => Err(format!("want {e}, got {err}")),
            (Want::Errno(e), Ok(())) => Err(format!("want {e}, got it accepted")),
            (
                Want::Refused(e, at, msg),
                Err(openqos::Error::Kernel {
                    errno,
                    attr,
                    message,
                    ..
                }),
            ) => {
                let want_attr = at.map(|t| policy(t).map_or("?", |p| p.name));
                let msg_ok = message
                    .as_deref()
                    .is_some_and(|m| !m.is_empty() && m.starts_with(msg));
                if *errno == *e as i32 && *attr == want_attr && msg_ok {
                    Ok(())
                } else {
                    Err(format!(
                        "want {e} blaming {} with a message starting '{msg}', got {errno} blaming {} ({})",
                        want_attr.unwrap_or("-"),
                        attr.unwrap_or("-"),
                        message.as_deref().unwrap_or("no message")
                    ))
                }
            }
            (Want::Ok, Err(e)) => Err(format!("want it accepted, got {e}")),
            (Want::Refused(e, ..), Ok(())) => Err(format!("want {e}, got it accepted")),
            (_, Err(e)) => Err(format!("{e}")),
        };
        match verdict {
            Ok(()) => right += 1,
            Err(why) => {
                println!("WRONG {}: {why}", case.what);
                wrong += 1;
            }
        }
    }
    if wrong > 0 {
        bail!(
            "{wrong} of {} requests of phase {phase} got a wrong answer",
            cases.len()
        );
    }
    Ok(right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let r = Req::default().nest(attr::RULE, true, rule(80));
        let (ty, payload) = &r.0[0];
        assert_eq!(*ty, attr::RULE | NESTED);
        // PORT (4 + 2, padded to 8) and RULE_TYPE (4 + 1, padded to 8).
        assert_eq!(payload.len(), 16);
        assert_eq!(u16::from_ne_bytes([payload[2], payload[3]]), attr::PORT);
        assert_eq!(
            u16::from_ne_bytes([payload[10], payload[11]]),
            attr::RULE_TYPE
        );
    }

    #[test]
    fn bad_values_lie_outside_the_abi() {
        // The first unknown bit of each flag set is unknown, and the type past the last
        // has no name.
        assert_eq!(
            (rule_flags::ALL + 1).next_power_of_two() & rule_flags::ALL,
            0
        );
        assert_eq!(
            (group_flags::ALL + 1).next_power_of_two() & group_flags::ALL,
            0
        );
        assert_eq!(
            (replace_flags::ALL + 1).next_power_of_two() & replace_flags::ALL,
            0
        );
        assert!(policy(attr::MAX + 1).is_none());
        // Every attribute a case blames has a name.
        for c in rules()
            .iter()
            .chain(&conditions())
            .chain(&content())
            .chain(&lease())
        {
            if let Want::Refused(_, Some(t), _) = c.want {
                assert!(policy(t).is_some(), "{}", c.what);
            }
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The whole configuration of a namespace in one file (`tcpchains --save-all`,
//! `--restore-all`): the rule set (`-Q`, `-A`, `-a` lines, as `-S` writes them), the
//! ports metered on request (`meter PORT`) and the socket groups (`group ID TYPE [rate
//! R] [burst B] [ftp]`, then one `member ID PORT [weight W] [ftp]` per port).
//!
//! A restore is all or nothing: the file is parsed and the rule set checked by the
//! kernel first; then groups, meters, rules and prioritized queues are changed to
//! match; if any change fails, the configuration read before the restore is put back
//! the same way, and both errors are reported. The rules switch atomically in the
//! kernel (one `RULESET_REPLACE`); groups and meters change one request at a time,
//! while traffic flows.

use crate::{drop_prios, parse_rule_set, restore_prios, save, RuleSet};
use anyhow::{bail, Context, Result};
use openqos::{Client, GroupSettings, GroupType};

/// A socket group as configured (its counters aside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConf {
    pub id: u32,
    pub kind: GroupType,
    pub rate: Option<u64>,
    pub burst: Option<u64>,
    pub ftp: bool,
    /// Ports in the order attached: port, weight (ratio groups), FTP control port.
    pub members: Vec<(u16, Option<u16>, bool)>,
}

/// The whole configuration.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Full {
    pub set: RuleSet,
    pub meters: Vec<u16>,
    pub groups: Vec<GroupConf>,
}

/// Reads the namespace's whole configuration. A group under a lease is saved with the
/// rate it goes back to (its configured one), not the leased one.
pub fn read(c: &mut Client) -> Result<Full> {
    let prios = c.prios(None)?;
    let rules = c.rules(None)?;
    let set = parse_rule_set(&save(&prios, &rules))?;
    let meters = c
        .meters(None)?
        .into_iter()
        .filter(|m| m.requested)
        .map(|m| m.port)
        .collect();
    let groups = c
        .groups(None)?
        .into_iter()
        .map(|g| GroupConf {
            id: g.id,
            kind: g.kind,
            rate: g.fallback_rate.or(g.rate),
            burst: g.burst,
            ftp: g.ftp,
            members: g
                .members
                .iter()
                .map(|m| {
                    let w = (g.kind == GroupType::Ratio).then_some(m.weight);
                    (m.port, w, m.ftp && !g.ftp)
                })
                .collect(),
        })
        .collect();
    Ok(Full {
        set,
        meters,
        groups,
    })
}

/// The text of a whole configuration.
pub fn text(c: &mut Client) -> Result<String> {
    let prios = c.prios(None)?;
    let rules = c.rules(None)?;
    let full = read(c)?;
    let mut out = save(&prios, &rules).replace(
        "# openqos rule set (tcpchains -S); apply with: tcpchains --restore FILE\n",
        "# openqos configuration (tcpchains --save-all); apply with: tcpchains --restore-all FILE\n",
    );
    for p in &full.meters {
        out += &format!("meter {p}\n");
    }
    for g in &full.groups {
        out += &format!("group {} {}", g.id, g.kind.name());
        if let Some(r) = g.rate {
            out += &format!(" rate {r}");
        }
        if let Some(b) = g.burst {
            out += &format!(" burst {b}");
        }
        if g.ftp {
            out += " ftp";
        }
        out.push('\n');
        for (port, w, ftp) in &g.members {
            out += &format!("member {} {port}", g.id);
            if let Some(w) = w {
                out += &format!(" weight {w}");
            }
            if *ftp {
                out += " ftp";
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// Parses a whole configuration.
pub fn parse(text: &str) -> Result<Full> {
    let mut rule_lines = String::new();
    let mut full = Full::default();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |s: Option<&&str>, what: &str| -> Result<u64> {
            s.with_context(|| format!("line {n}: missing {what}"))?
                .parse()
                .with_context(|| format!("line {n}: bad {what}"))
        };
        match w.first().copied() {
            Some("meter") => {
                let p = num(w.get(1), "port")?;
                full.meters.push(
                    u16::try_from(p)
                        .ok()
                        .filter(|p| *p > 0)
                        .with_context(|| format!("line {n}: port {p} out of range"))?,
                );
                rule_lines.push('\n');
            }
            Some("group") => {
                let id = u32::try_from(num(w.get(1), "group number")?)
                    .with_context(|| format!("line {n}: group number out of range"))?;
                let kind: GroupType = w
                    .get(2)
                    .with_context(|| format!("line {n}: missing group type"))?
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("line {n}: {e}"))?;
                let mut g = GroupConf {
                    id,
                    kind,
                    rate: None,
                    burst: None,
                    ftp: false,
                    members: Vec::new(),
                };
                let mut i = 3;
                while let Some(k) = w.get(i) {
                    match *k {
                        "rate" => g.rate = Some(num(w.get(i + 1), "rate")?),
                        "burst" => g.burst = Some(num(w.get(i + 1), "burst")?),
                        "ftp" => {
                            g.ftp = true;
                            i += 1;
                            continue;
                        }
                        other => bail!("line {n}: unknown group setting '{other}'"),
                    }
                    i += 2;
                }
                if full.groups.iter().any(|x| x.id == id) {
                    bail!("line {n}: a second group {id}");
                }
                full.groups.push(g);
                rule_lines.push('\n');
            }
            Some("member") => {
                let id = num(w.get(1), "group number")?;
                let port = u16::try_from(num(w.get(2), "port")?)
                    .with_context(|| format!("line {n}: port out of range"))?;
                let (mut weight, mut ftp) = (None, false);
                let mut i = 3;
                while let Some(k) = w.get(i) {
                    match *k {
                        "weight" => {
                            weight = Some(
                                u16::try_from(num(w.get(i + 1), "weight")?)
                                    .with_context(|| format!("line {n}: weight out of range"))?,
                            );
                            i += 2;
                        }
                        "ftp" => {
                            ftp = true;
                            i += 1;
                        }
                        other => bail!("line {n}: unknown member setting '{other}'"),
                    }
                }
                let Some(g) = full.groups.iter_mut().find(|g| u64::from(g.id) == id) else {
                    bail!("line {n}: no group {id} line before this member");
                };
                g.members.push((port, weight, ftp));
                rule_lines.push('\n');
            }
            // Everything else is the rule set's (keeping the line numbers).
            _ => {
                rule_lines += line;
                rule_lines.push('\n');
            }
        }
    }
    full.set = parse_rule_set(&rule_lines)?;
    // A rule's incoming port is never a server's port (the kernel refuses either order);
    // the kernel's check of the rule set alone cannot see this file's other lines.
    for r in &full.set.rules {
        let p = r.port;
        let role = if full.meters.contains(&p) {
            Some("metered on request")
        } else if full
            .groups
            .iter()
            .any(|g| g.members.iter().any(|m| m.0 == p))
        {
            Some("a group's member")
        } else if full.set.prios.iter().any(|q| q.0 == p) {
            Some("a prioritized port")
        } else {
            None
        };
        if let Some(role) = role {
            bail!("port {p} is a rule's incoming port and {role}: those are for a server's port");
        }
    }
    Ok(full)
}

/// Makes the namespace's groups, meters, rules and prioritized queues those of `want`.
fn apply(c: &mut Client, want: &Full, have: &Full) -> Result<()> {
    // First what `want` does not have, so that the ports it frees can take other roles:
    // prioritized queues (their meters stay while they exist), groups gone or of another
    // type, members leaving, meters on request (a member's meter stays while it is one).
    drop_prios(c, &want.set)?;
    for g in &have.groups {
        if !want.groups.iter().any(|w| w.id == g.id && w.kind == g.kind) {
            c.delete_group(g.id)
                .with_context(|| format!("deleting group {}", g.id))?;
        }
    }
    for g in &want.groups {
        let Some(old) = have
            .groups
            .iter()
            .find(|h| h.id == g.id && h.kind == g.kind)
        else {
            continue;
        };
        for (port, _, ftp) in &old.members {
            if !g.members.iter().any(|(p, _, f)| p == port && f == ftp) {
                c.delete_group_port(g.id, *port)
                    .with_context(|| format!("group {}, port {port}", g.id))?;
            }
        }
    }
    for p in &have.meters {
        if !want.meters.contains(p) {
            c.delete_meter(*p)
                .with_context(|| format!("meter of port {p}"))?;
        }
    }
    // The rules, atomically: an incoming port that is a server's port in `have` is free
    // now, and a server's port of `want` that a rule of `have` owns is freed.
    c.replace_rules(&want.set.rules, false)
        .context("the rule set")?;
    // Then what `want` adds.
    for g in &want.groups {
        let settings = GroupSettings {
            rate: g.rate,
            burst: g.burst,
            ftp: Some(g.ftp),
            lease_ms: None,
        };
        let old = have
            .groups
            .iter()
            .find(|h| h.id == g.id && h.kind == g.kind);
        match old {
            Some(_) if g.kind == GroupType::Ratio => c.set_group(
                g.id,
                &GroupSettings {
                    ftp: Some(g.ftp),
                    ..Default::default()
                },
            ),
            Some(_) => c.set_group(g.id, &settings),
            None => c.create_group(g.id, g.kind, &settings),
        }
        .with_context(|| format!("group {}", g.id))?;
        let old_members = old.map_or(&[][..], |o| &o.members[..]);
        for (port, weight, ftp) in &g.members {
            let kept = old_members.iter().any(|(p, _, f)| p == port && f == ftp);
            if kept {
                if let Some(w) = weight {
                    c.set_group_weight(g.id, *port, *w)
                        .with_context(|| format!("group {}, port {port}", g.id))?;
                }
            } else {
                c.add_group_port(g.id, *port, *weight, *ftp)
                    .with_context(|| format!("group {}, port {port}", g.id))?;
            }
        }
    }
    for p in &want.meters {
        if !have.meters.contains(p) {
            c.create_meter(*p)
                .with_context(|| format!("meter of port {p}"))?;
        }
    }
    restore_prios(c, &want.set)
}

/// `--restore-all`: all of `want`, or (on any error) the configuration as it was.
pub fn restore(want: &Full, test: bool) -> Result<()> {
    let mut c = Client::connect()?;
    c.replace_rules(&want.set.rules, true)
        .context("the rule set")?;
    if test {
        return Ok(());
    }
    let have = read(&mut c)?;
    let Err(e) = apply(&mut c, want, &have) else {
        return Ok(());
    };
    // Put back what there was, from whatever state the failure left.
    let now = read(&mut c)?;
    match apply(&mut c, &have, &now) {
        Ok(()) => Err(e.context("nothing changed: the previous configuration is back")),
        Err(back) => Err(e.context(format!(
            "and putting the previous configuration back failed too: {back:#}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_meters_parse() {
        let text = "# c\n-A a -p 21 -o 1021\nmeter 8090\ngroup 1 output rate 102400 burst 10240 ftp\nmember 1 2021\ngroup 2 ratio\nmember 2 8081 weight 3\nmember 2 8082 weight 1 ftp\n-a a -p 21 -i 10.0.0.0/8 -r 2021\n";
        let f = parse(text).unwrap();
        assert_eq!(f.meters, vec![8090]);
        assert_eq!(f.groups.len(), 2);
        assert_eq!(f.groups[0].rate, Some(102400));
        assert!(f.groups[0].ftp);
        assert_eq!(
            f.groups[1].members,
            vec![(8081, Some(3), false), (8082, Some(1), true)]
        );
        assert_eq!(f.set.rules.len(), 1);
        assert_eq!(f.set.rules[0].conditions.len(), 1);
    }

    #[test]
    fn a_rule_port_is_no_server_port() {
        for (text, want) in [
            ("-A a -p 80 -o 81\nmeter 80\n", "metered on request"),
            (
                "-A a -p 80 -o 81\ngroup 1 ratio\nmember 1 80\n",
                "a group's member",
            ),
        ] {
            let Err(e) = parse(text) else {
                panic!("accepted: {text}");
            };
            let e = e.to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(parse("-A a -p 80 -o 81\nmeter 81\ngroup 1 ratio\nmember 1 81\n").is_ok());
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, want) in [
            ("member 1 80", "line 1: no group 1"),
            ("group 1 fast", "line 1: unknown group type"),
            ("group 1 rate x 5", "line 1: unknown group setting 'x'"),
            ("group 1 ratio\ngroup 1 rate", "line 2: a second group 1"),
            ("meter 0", "line 1: port 0 out of range"),
            ("meter 8080\n-F", "line 2: a rule set holds only"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! `Documentation/netlink/openqos.yaml` (the family in the kernel's YNL spec format)
//! says exactly what `src/abi.rs` defines: names and numbers of commands and
//! attributes, attribute types, range checks, request attributes, permissions and
//! limits.

use openqos_abi::abi::{
    self, attr, cmd, group_stat, hist, limits, meter_stat, prio_stat, stat, Kind,
};
use serde_yaml::Value;
use std::collections::BTreeSet;

fn spec() -> Value {
    // The directory cargo runs the test for, not the one it was compiled in: a build
    // cached outside the tree (scripts/lib.sh, ocargo) may come from another clone.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let path = format!("{dir}/../Documentation/netlink/openqos.yaml");
    let text = std::fs::read_to_string(path).expect("read the YNL spec");
    serde_yaml::from_str(&text).expect("parse the YNL spec")
}

fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key]
        .as_sequence()
        .unwrap_or_else(|| panic!("{key} is not a list"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v:?}"))
}

fn set<'a>(spec: &'a Value, name: &str) -> &'a Vec<Value> {
    let s = list(spec, "attribute-sets")
        .iter()
        .find(|s| str_of(s, "name") == name)
        .unwrap_or_else(|| panic!("no attribute set {name}"));
    list(s, "attributes")
}

/// Attribute numbers are implicit in YNL: 1 for the first, then one more each.
fn numbered(attrs: &[Value]) -> Vec<(u16, &Value)> {
    let mut next = 1;
    attrs
        .iter()
        .map(|a| {
            if let Some(v) = a["value"].as_u64() {
                next = v as u16;
            }
            next += 1;
            (next - 1, a)
        })
        .collect()
}

fn check(a: &Value, key: &str) -> Option<u64> {
    a["checks"][key].as_u64()
}

#[test]
fn family() {
    let s = spec();
    assert_eq!(str_of(&s, "protocol"), "genetlink");
    let name = abi::FAMILY_NAME.strip_suffix(b"\0").unwrap();
    assert_eq!(str_of(&s, "name").as_bytes(), name);
    let version = list(&s, "definitions")
        .iter()
        .find(|d| str_of(d, "name") == "family-version")
        .expect("family-version");
    assert_eq!(
        version["value"].as_u64(),
        Some(u64::from(abi::FAMILY_VERSION))
    );
}

#[test]
fn attributes_match_the_policy() {
    let s = spec();
    let attrs = numbered(set(&s, "openqos"));
    assert_eq!(attrs.len(), usize::from(attr::MAX), "attribute count");
    for (ty, a) in attrs {
        let p = abi::policy(ty).unwrap_or_else(|| panic!("attribute {ty} not in the ABI"));
        let name = str_of(a, "name");
        assert_eq!(name, p.name, "name of attribute {ty}");
        let yty = str_of(a, "type");
        let (min, max) = (check(a, "min").unwrap_or(0), check(a, "max"));
        match p.kind {
            Kind::U8 | Kind::U16 | Kind::U32 | Kind::U64 => {
                let (want, top) = match p.kind {
                    Kind::U8 => ("u8", u64::from(u8::MAX)),
                    Kind::U16 => ("u16", u64::from(u16::MAX)),
                    Kind::U32 => ("u32", u64::from(u32::MAX)),
                    _ => ("u64", u64::MAX),
                };
                assert_eq!(yty, want, "{name}: type");
                assert_eq!(min, p.min, "{name}: min");
                assert_eq!(max.unwrap_or(top), p.max, "{name}: max");
            }
            Kind::Bytes(lo, hi) => {
                assert_eq!(yty, "binary", "{name}: type");
                let (ylo, yhi) = match check(a, "exact-len") {
                    Some(n) => (n, n),
                    None => (
                        check(a, "min-len").unwrap_or(0),
                        check(a, "max-len").expect("max-len"),
                    ),
                };
                assert_eq!((ylo, yhi), (u64::from(lo), u64::from(hi)), "{name}: length");
            }
            Kind::Nested => {
                assert_eq!(yty, "nest", "{name}: type");
                assert_eq!(str_of(a, "nested-attributes"), "openqos", "{name}: nest");
            }
            // Reply-only attributes: any reply type, but never in a request (below).
            Kind::Reject => {
                assert!(a["checks"].is_null(), "{name}: checks on a reply attribute");
            }
        }
    }
}

/// Checks that the attribute set `name` lists `names`, in order, all u64.
fn check_u64_set(name: &str, names: &[(u16, &str)]) {
    let s = spec();
    let attrs = numbered(set(&s, name));
    assert_eq!(attrs.len(), names.len(), "{name} count");
    for ((ty, a), (want_ty, want_name)) in attrs.into_iter().zip(names.iter().copied()) {
        assert_eq!((ty, str_of(a, "name")), (want_ty, want_name));
        assert_eq!(str_of(a, "type"), "u64", "{want_name}");
    }
}

#[test]
fn stats_match() {
    check_u64_set("stats", &stat::NAMES);
}

#[test]
fn meter_stats_match() {
    check_u64_set("meter-stats", &meter_stat::NAMES);
}

#[test]
fn group_stats_match() {
    check_u64_set("group-stats", &group_stat::NAMES);
}

#[test]
fn prio_stats_match() {
    check_u64_set("prio-stats", &prio_stat::NAMES);
}

#[test]
fn operations_match_the_commands() {
    let s = spec();
    let ops = list(&s["operations"], "list");
    assert_eq!(ops.len(), cmd::NAMES.len(), "command count");
    let attr_num = |name: &str| {
        abi::POLICY
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("unknown attribute {name}"))
            .ty
    };
    for (op, (c, want_name)) in ops.iter().zip(cmd::NAMES) {
        let name = str_of(op, "name");
        assert_eq!(name, want_name);
        assert_eq!(op["value"].as_u64(), Some(u64::from(c)), "{name}: value");
        let flags: BTreeSet<&str> = op["flags"]
            .as_sequence()
            .map(|f| f.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let admin = flags.contains("uns-admin-perm");
        assert_eq!(admin, abi::is_mutation(c), "{name}: permission");
        let how = if op["do"].is_null() { "dump" } else { "do" };
        let got: BTreeSet<u16> = list(&op[how]["request"], "attributes")
            .iter()
            .map(|a| attr_num(a.as_str().unwrap()))
            .collect();
        let (req, opt) = abi::command_attrs(c);
        let want: BTreeSet<u16> = req.iter().chain(opt).copied().collect();
        assert_eq!(got, want, "{name}: request attributes");
        for a in got {
            assert_ne!(abi::policy(a).unwrap().kind, Kind::Reject, "{name}");
        }
    }
}

#[test]
fn limits_match() {
    let s = spec();
    let defs = list(&s, "definitions");
    let value = |name: &str| {
        defs.iter()
            .find(|d| str_of(d, "name") == name)
            .and_then(|d| d["value"].as_u64())
            .unwrap_or_else(|| panic!("no constant {name}"))
    };
    assert_eq!(value("max-rules"), limits::MAX_RULES as u64);
    assert_eq!(value("max-conds"), limits::MAX_CONDS as u64);
    assert_eq!(value("max-addr-conds"), limits::MAX_ADDR_CONDS as u64);
    assert_eq!(value("max-chain-depth"), limits::MAX_CHAIN_DEPTH as u64);
    assert_eq!(value("weight-total"), limits::WEIGHT_TOTAL);
    assert_eq!(value("max-pattern"), limits::MAX_PATTERN as u64);
    assert_eq!(value("max-pattern-bytes"), limits::MAX_PATTERN_BYTES as u64);
    assert_eq!(value("lookahead"), limits::LOOKAHEAD as u64);
    assert_eq!(value("max-pending"), limits::MAX_PENDING as u64);
    assert_eq!(value("max-meters"), limits::MAX_METERS as u64);
    assert_eq!(
        value("max-meter-listeners"),
        limits::MAX_METER_LISTENERS as u64
    );
    assert_eq!(value("hist-buckets"), hist::BUCKETS as u64);
    assert_eq!(value("max-groups"), limits::MAX_GROUPS as u64);
    assert_eq!(value("max-group-id"), u64::from(limits::MAX_GROUP_ID));
    assert_eq!(value("max-group-ports"), limits::MAX_GROUP_PORTS as u64);
    assert_eq!(value("max-ftp-data"), limits::MAX_FTP_DATA as u64);
    let entries = |name: &str| -> Vec<String> {
        let d = defs.iter().find(|d| str_of(d, "name") == name).unwrap();
        list(d, "entries")
            .iter()
            .map(|e| str_of(e, "name").to_owned())
            .collect()
    };
    assert_eq!(entries("rule-type").len(), usize::from(abi::rule_type::MAX));
    assert_eq!(
        entries("rule-flags").len() as u32,
        abi::rule_flags::ALL.count_ones()
    );
    assert_eq!(
        entries("replace-flags").len() as u32,
        abi::replace_flags::ALL.count_ones()
    );
    let types: Vec<(u8, &str)> = abi::group_type::NAMES.to_vec();
    let want: Vec<String> = types.iter().map(|(_, n)| (*n).to_owned()).collect();
    assert_eq!(entries("group-type"), want);
    assert_eq!(
        entries("group-flags").len() as u32,
        abi::group_flags::ALL.count_ones()
    );
    assert_eq!(entries("meter-flags").len(), 4);
    assert_eq!(
        entries("prio-flags").len() as u32,
        abi::prio_flags::ALL.count_ones()
    );
    assert_eq!(value("max-prio-ports"), limits::MAX_PRIO_PORTS as u64);
    assert_eq!(
        value("max-prio-classes"),
        u64::from(limits::MAX_PRIO_CLASSES)
    );
    assert_eq!(value("max-prio-held"), u64::from(limits::MAX_PRIO_HELD));
}

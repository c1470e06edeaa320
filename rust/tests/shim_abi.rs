// SPDX-License-Identifier: GPL-2.0

//! The module's Rust mirror of the shim's C constants (`qos_ffi.rs`) says what
//! `qos_shim.h` defines: every `enum oq_move_result` value has a `MoveResult` variant of
//! the same number, and every `OQ_PEEK_*` constant in Rust has the header's value. The
//! module cannot see the header's enums at build time (bindgen runs on the kernel's
//! headers only), so this host test, run by `scripts/test`, is the check.

use std::collections::BTreeMap;

fn read(rel: &str) -> String {
    // The directory cargo runs the test for, not the one it was compiled in: a build
    // cached outside the tree (scripts/lib.sh, ocargo) may come from another clone.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let path = format!("{dir}/../{rel}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `NAME = N,` lines of the C enum that starts with `start` (up to its `};`).
fn c_enum(header: &str, start: &str) -> BTreeMap<String, i64> {
    let body = header
        .split_once(start)
        .unwrap_or_else(|| panic!("no {start:?} in qos_shim.h"))
        .1;
    let body = body.split_once("};").expect("unterminated enum").0;
    body.lines()
        .filter_map(|l| {
            let l = l.split("/*").next()?.trim().trim_end_matches(',');
            let (name, value) = l.split_once('=')?;
            Some((name.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// `OQ_MOVE_NOT_LISTENING` -> `NotListening`.
fn camel(c_name: &str, prefix: &str) -> String {
    c_name
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{c_name} lacks {prefix}"))
        .split('_')
        .map(|w| {
            let w = w.to_ascii_lowercase();
            let mut cs = w.chars();
            cs.next()
                .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn move_results_match_the_header() {
    let c = c_enum(&read("qos_shim.h"), "enum oq_move_result {");
    assert!(c.len() >= 10, "parsed {c:?}");
    let rust = read("qos_ffi.rs");
    let body = rust
        .split_once("pub(crate) enum MoveResult {")
        .expect("no MoveResult in qos_ffi.rs")
        .1
        .split_once("\n}")
        .unwrap()
        .0;
    let r: BTreeMap<String, i64> = body
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().trim_end_matches(',').split_once(" = ")?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    let want: BTreeMap<String, i64> = c.iter().map(|(k, v)| (camel(k, "OQ_MOVE_"), *v)).collect();
    assert_eq!(
        r, want,
        "MoveResult in qos_ffi.rs against enum oq_move_result"
    );
    // from_c looks values up in ALL: every variant must be there.
    for name in want.keys() {
        assert!(
            rust.contains(&format!("        MoveResult::{name},\n")),
            "MoveResult::{name} is missing from MoveResult::ALL"
        );
    }
}

#[test]
fn peek_flags_match_the_header() {
    let c = c_enum(
        &read("qos_shim.h"),
        "/* Flags returned by the peek functions. */\nenum {",
    );
    assert_eq!(c.len(), 4, "parsed {c:?}");
    let rust = read("qos_ffi.rs");
    let mut seen = 0;
    for l in rust.lines() {
        let Some(rest) = l.strip_prefix("pub(crate) const OQ_PEEK_") else {
            continue;
        };
        let (name, value) = rest
            .split_once(": i32 = ")
            .expect("const OQ_PEEK_*: i32 = N;");
        let value: i64 = value.trim_end_matches(';').parse().unwrap();
        assert_eq!(
            c.get(&format!("OQ_PEEK_{name}")),
            Some(&value),
            "OQ_PEEK_{name}"
        );
        seen += 1;
    }
    assert!(seen >= 3, "only {seen} OQ_PEEK_* constants in qos_ffi.rs");
}

#[test]
fn the_parsers_see_a_changed_value() {
    // A header whose values moved must not parse as the real one.
    let h = read("qos_shim.h").replace("OQ_MOVE_HEAD = 8", "OQ_MOVE_HEAD = 11");
    assert_eq!(
        c_enum(&h, "enum oq_move_result {").get("OQ_MOVE_HEAD"),
        Some(&11)
    );
    assert_eq!(camel("OQ_MOVE_NOT_LISTENING", "OQ_MOVE_"), "NotListening");
}

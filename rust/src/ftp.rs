// SPDX-License-Identifier: GPL-2.0

//! FTP passive-mode replies: the data port a server announces on its control
//! connection.
//!
//! A server answers `PASV` with `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` (RFC 959:
//! the text around the numbers is free, and some servers leave the parentheses out) and
//! `EPSV` with `229 Entering Extended Passive Mode (|||port|)` (RFC 2428: the delimiter
//! is any printable character, the same four times).
//!
//! Such a reply is only believed where a client asked for it: the module reads the start
//! of what the server reads on a control connection, and a `PASV` or `EPSV` command there
//! ([`passive_command`]) arms the connection for the server's next write, which alone is
//! parsed ([`reply_port`]). Bytes a client sends or uploads, or a file a server sends,
//! are never taken for a reply otherwise.

/// Bytes of a write the parser looks at (a reply line is short).
pub const PEEK: usize = 128;

/// Bytes of a read [`passive_command`] looks at.
pub const COMMAND_PEEK: usize = 8;

/// How long an announced data listener stays in its control port's groups without the
/// data connection it was announced for (milliseconds): a client connects right after
/// the reply, and vsftpd's own `accept_timeout` is 60 s too.
pub const DATA_TIMEOUT_MS: u32 = 60_000;

/// Whether a read that starts with `buf` is a `PASV` or `EPSV` command (RFC 959: command
/// names are case-insensitive; `EPSV` may have an argument, such as `EPSV 2` or `EPSV
/// ALL`). Only the start of a read counts: an FTP server reads a command line by line,
/// while an echo or a web server reads whatever the client wrote, and a line further in
/// would then be answered by a write that starts with the client's own bytes.
pub fn passive_command(buf: &[u8]) -> bool {
    let Some(name) = buf.get(..4) else {
        return false;
    };
    if !name.eq_ignore_ascii_case(b"PASV") && !name.eq_ignore_ascii_case(b"EPSV") {
        return false;
    }
    matches!(buf.get(4), None | Some(b'\r' | b'\n' | b' '))
}

/// The data port of a `227` or `229` reply at the start of `buf`.
pub fn reply_port(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    if line.len() < 4 || !matches!(line[3], b' ' | b'-') {
        return None;
    }
    match &line[..3] {
        b"227" => passive_227(&line[4..]),
        b"229" => passive_229(&line[4..]),
        _ => None,
    }
}

/// `h1,h2,h3,h4,p1,p2` somewhere in `text`: the first run of six comma-separated
/// numbers, each 0..=255.
fn passive_227(text: &[u8]) -> Option<u16> {
    let start = text.iter().position(u8::is_ascii_digit)?;
    let mut nums = [0u16; 6];
    let mut n = 0;
    let mut cur: Option<u16> = None;
    for &b in &text[start..] {
        match b {
            b'0'..=b'9' => {
                let v = cur.unwrap_or(0) * 10 + u16::from(b - b'0');
                if v > 255 {
                    return None;
                }
                cur = Some(v);
            }
            b',' => {
                nums[n] = cur?;
                n += 1;
                cur = None;
                if n == 6 {
                    return None;
                }
            }
            _ => break,
        }
    }
    nums[n] = cur?;
    if n != 5 {
        return None;
    }
    let port = nums[4] * 256 + nums[5];
    (port != 0).then_some(port)
}

/// `(<d><d><d>port<d>)` in `text`.
fn passive_229(text: &[u8]) -> Option<u16> {
    let open = text.iter().position(|&b| b == b'(')?;
    let body = &text[open + 1..];
    let d = *body.first()?;
    if !(0x21..=0x7e).contains(&d) || d.is_ascii_digit() {
        return None;
    }
    let body = body.strip_prefix(&[d, d, d])?;
    let end = body.iter().position(|&b| b == d)?;
    let digits = &body[..end];
    if digits.is_empty() || digits.len() > 5 || body.get(end + 1) != Some(&b')') {
        return None;
    }
    let mut port: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(b - b'0');
    }
    match u16::try_from(port) {
        Ok(p) if p != 0 => Some(p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vsftpd_and_busybox_replies() {
        assert_eq!(
            reply_port(b"227 Entering Passive Mode (127,0,0,1,117,49).\r\n"),
            Some(117 * 256 + 49)
        );
        assert_eq!(
            reply_port(b"227 PASV ok (10,1,2,3,4,1)\r\n"),
            Some(4 * 256 + 1)
        );
        // No parentheses (RFC 959 allows it).
        assert_eq!(reply_port(b"227 =127,0,0,1,0,21\r\n"), Some(21));
        assert_eq!(
            reply_port(b"229 Entering Extended Passive Mode (|||40123|)\r\n"),
            Some(40123)
        );
        assert_eq!(reply_port(b"229 EPSV ok (!!!2021!)\r\n"), Some(2021));
    }

    #[test]
    fn other_replies_and_junk() {
        assert_eq!(reply_port(b"226 Transfer complete.\r\n"), None);
        assert_eq!(reply_port(b"2270 (1,2,3,4,5,6)\r\n"), None);
        assert_eq!(reply_port(b"227 (1,2,3,4,5)\r\n"), None);
        assert_eq!(reply_port(b"227 (1,2,3,4,5,6,7)\r\n"), None);
        assert_eq!(reply_port(b"227 (1,2,3,4,256,6)\r\n"), None);
        assert_eq!(reply_port(b"227 (1,2,3,4,0,0)\r\n"), None);
        assert_eq!(reply_port(b"229 (|||70000|)\r\n"), None);
        assert_eq!(reply_port(b"229 (|||12a|)\r\n"), None);
        assert_eq!(reply_port(b"229 (||12|)\r\n"), None);
        assert_eq!(reply_port(b"229 (1112111)\r\n"), None);
        assert_eq!(reply_port(b"229 (|||0|)\r\n"), None);
        assert_eq!(reply_port(b"22"), None);
        assert_eq!(reply_port(b""), None);
        // A data line that happens to start like a reply is only parsed at the start
        // of a write, as a reply would be.
        assert_eq!(reply_port(b"hello\n227 (1,2,3,4,5,6)"), None);
    }

    #[test]
    fn passive_commands() {
        assert!(passive_command(b"PASV\r\n"));
        assert!(passive_command(b"pasv\r\n"));
        assert!(passive_command(b"EPSV\r\n"));
        assert!(passive_command(b"EPSV 2\r\n"));
        assert!(passive_command(b"EpSv ALL\r\n"));
        assert!(passive_command(b"PASV\n"));
        // A server reading a byte at a time, or a short read.
        assert!(passive_command(b"PASV"));
        assert!(!passive_command(b"PAS"));
        assert!(!passive_command(b""));
        assert!(!passive_command(b"PASVX\r\n"));
        assert!(!passive_command(b"LPSV\r\n"));
        assert!(!passive_command(b"PORT 127,0,0,1,8,174\r\n"));
        assert!(!passive_command(b" PASV\r\n"));
        // Only at the start of the read.
        assert!(!passive_command(b"227 (127,0,0,1,8,174)\r\nPASV\r\n"));
        assert!(!passive_command(b"GET / HTTP/1.0\r\nPASV: 1\r\n\r\n"));
    }

    proptest! {
        #[test]
        fn command_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..COMMAND_PEEK)) {
            let _ = passive_command(&buf);
        }

        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..PEEK)) {
            let _ = reply_port(&buf);
        }

        #[test]
        fn every_port_round_trips(port in 1u16..=65535) {
            let a = std::format!("227 Entering Passive Mode (127,0,0,1,{},{})\r\n", port >> 8, port & 255);
            prop_assert_eq!(reply_port(a.as_bytes()), Some(port));
            let b = std::format!("229 Entering Extended Passive Mode (|||{port}|)\r\n");
            prop_assert_eq!(reply_port(b.as_bytes()), Some(port));
        }
    }
}

# Raw requests the tools never send: the kernel's policy and the module's own checks
# refuse each one with the right errno, blame the right attribute, and create nothing.
# Commands: 1 rule-new, 2 rule-del, 3 rule-get, 4 cond-new, 5 cond-del, 6 flush,
# 8 ruleset-replace.
# Attributes: 1 port, 2 rule-type, 3 default-port, 4 rule-flags, 5 cond-index, 6 addr4,
# 7 mask4, 8 addr6, 9 prefix6, 10 out-port, 11 cond (nested), 19 rule (nested),
# 20 replace-flags. A type plus 32768 (NLA_F_NESTED) is sent as a nested attribute.
nl() { qostest nl "$@"; }
# check WHAT WANT-ERRNO WANT-ATTR -- ARGS: the reply must start with errno=E attr=A.
# The requests are collected and sent by one `qostest nl --batch` (verdict() below): a
# process costs a few hundred ms on the debug kernel under emulation.
: >/tmp/nl.reqs
: >/tmp/nl.want
check() {
	what=$1 e=$2 a=$3; shift 4
	echo "$*" >>/tmp/nl.reqs
	printf '%s|%s|%s\n' "$what" "$e" "$a" >>/tmp/nl.want
}
refused=0
verdict() {
	qostest nl --batch </tmp/nl.reqs >/tmp/nl.got
	expect_eq "replies" "$(wc -l </tmp/nl.got)" "$(wc -l </tmp/nl.want)"
	while IFS='|' read -r what e a && IFS= read -r got <&3; do
		refused=$((refused + 1))
		case "$got" in
		"errno=$e attr=$a msg="?*) ;;
		*) fail "$what: got '$got', want 'errno=$e attr=$a msg=...'" ;;
		esac
	done </tmp/nl.want 3</tmp/nl.got
	: >/tmp/nl.reqs
	: >/tmp/nl.want
}
ENOENT=2 EINVAL=22 ERANGE=34 EOPNOTSUPP=95
check "missing port" $EINVAL port -- --cmd 1 --attr 2:u8:1 --attr 3:u16:80
check "missing default port" $EINVAL default-port -- --cmd 1 --attr 1:u16:80 --attr 2:u8:1
check "port 0" $ERANGE port -- --cmd 1 --attr 1:u16:0 --attr 2:u8:1 --attr 3:u16:80
check "default port 0" $ERANGE default-port -- --cmd 1 --attr 1:u16:80 --attr 2:u8:1 --attr 3:u16:0
check "rule type 9" $ERANGE rule-type -- --cmd 1 --attr 1:u16:80 --attr 2:u8:9 --attr 3:u16:81
check "unknown flag" $ERANGE rule-flags -- --cmd 1 --attr 1:u16:80 --attr 2:u8:1 --attr 3:u16:81 --attr 4:u32:128
check "short port" $EINVAL port -- --cmd 1 --attr 1:u8:80 --attr 2:u8:1 --attr 3:u16:81
check "unknown attribute" $EINVAL - -- --cmd 1 --attr 1:u16:80 --attr 2:u8:1 --attr 3:u16:81 --attr 99:u8:1
check "condition outside a rule set" $EINVAL cond -- --cmd 1 --attr 1:u16:80 --attr 2:u8:1 --attr 3:u16:81 --attr 11:u8:1
check "attribute of another command" $EINVAL out-port -- --cmd 2 --attr 1:u16:80 --attr 10:u16:81
check "condition index 0" $ERANGE cond-index -- --cmd 5 --attr 1:u16:80 --attr 5:u32:0
check "condition index over the cap" $ERANGE cond-index -- --cmd 5 --attr 1:u16:80 --attr 5:u32:1025
# Rule sets: nested rules are validated as strictly as top-level attributes.
# PORT=80 and RULE_TYPE=1 inside a rule (hex of two padded attributes).
R=0600010050000000""0500020001000000
check "rule without default port" $EINVAL default-port -- --cmd 8 --attr 32787:hex:$R
check "rule without NLA_F_NESTED" $EINVAL rule -- --cmd 8 --attr 19:hex:${R}0600030051000000
check "port 0 inside a rule" $ERANGE port -- --cmd 8 --attr 32787:hex:060001000000000005000200010000000600030051000000
check "unknown replace flag" $ERANGE replace-flags -- --cmd 8 --attr 20:u32:2
check "cond-index inside a rule" $EINVAL cond-index -- --cmd 8 --attr 32787:hex:${R}06000300510000000800050001000000
got=$(nl --cmd 99)
case "$got" in "errno=$EOPNOTSUPP "*) refused=$((refused + 1)) ;; *) fail "unknown command: $got" ;; esac
verdict
# Conditions: the rule must exist for the matcher checks to be reached.
tcpchains -A a -p 4500 -o 4501
check "short addr6" $ERANGE addr6 -- --cmd 4 --attr 1:u16:4500 --attr 10:u16:4502 --attr 8:hex:20010db8 --attr 9:u8:32
check "prefix6 129" $ERANGE prefix6 -- --cmd 4 --attr 1:u16:4500 --attr 10:u16:4502 --attr 8:hex:20010db8000000000000000000000000 --attr 9:u8:129
check "addr4 without mask4" $EINVAL addr4 -- --cmd 4 --attr 1:u16:4500 --attr 10:u16:4502 --attr 6:u32:10
check "mask4 without addr4" $EINVAL mask4 -- --cmd 4 --attr 1:u16:4500 --attr 10:u16:4502 --attr 7:u32:255
check "v4 and v6 matcher" $EINVAL addr6 -- --cmd 4 --attr 1:u16:4500 --attr 10:u16:4502 --attr 6:u32:10 --attr 7:u32:255 --attr 8:hex:20010db8000000000000000000000000 --attr 9:u8:32
got=$(nl --cmd 4 --attr 1:u16:4500 --attr 10:u16:4502)
case "$got" in "errno=$EINVAL attr=- msg=a condition needs"*) refused=$((refused + 1)) ;; *) fail "no matcher: $got" ;; esac
# Socket groups (12 group-new, 15 group-set, 16 group-port-add; 24 group-id, 25 group-type,
# 26 rate, 27 burst, 28 group-flags, 29 member).
check "group id 0" $ERANGE group-id -- --cmd 12 --attr 24:u32:0 --attr 25:u8:2 --attr 26:u64:10
check "group type 4" $ERANGE group-type -- --cmd 12 --attr 24:u32:1 --attr 25:u8:4 --attr 26:u64:10
check "rate as u32" $EINVAL rate -- --cmd 12 --attr 24:u32:1 --attr 25:u8:2 --attr 26:u32:10
check "rate 0" $ERANGE rate -- --cmd 12 --attr 24:u32:1 --attr 25:u8:2 --attr 26:u64:0
check "rate over 10^10" $ERANGE rate -- --cmd 12 --attr 24:u32:1 --attr 25:u8:3 --attr 26:u64:10000000001
check "unknown group flag" $ERANGE group-flags -- --cmd 12 --attr 24:u32:1 --attr 25:u8:3 --attr 26:u64:10 --attr 28:u32:2
check "rate group without rate" $EINVAL rate -- --cmd 12 --attr 24:u32:1 --attr 25:u8:2
check "ratio group with burst" $EINVAL burst -- --cmd 12 --attr 24:u32:1 --attr 25:u8:1 --attr 27:u64:5
check "member in a request" $EINVAL member -- --cmd 12 --attr 24:u32:1 --attr 25:u8:1 --attr 29:u8:1
check "port of a missing group" $ENOENT group-id -- --cmd 16 --attr 24:u32:7 --attr 1:u16:9000
check "weight without port" $EINVAL weight -- --cmd 15 --attr 24:u32:7 --attr 15:u16:3
verdict
expect_eq "no group half-created" "$(skex -L | grep -c '^group')" 0
# A well-formed raw request still works, and nothing refused above was half-created.
expect_eq "valid raw condition" "$(nl --cmd 4 --attr 1:u16:4500 --attr 10:u16:4502 --attr 6:u32:10 --attr 7:u32:255)" ok
expect_eq "rules" "$(tcpchains -L | grep -c '^rule')" 1
expect_eq "conditions" "$(tcpchains -L -j | grep -c '"out_port"')" 1
# Unprivileged: every mutation is refused with EPERM before any parsing.
got=$(su -s /bin/sh nobody -c "qostest nl --cmd 6")
case "$got" in "errno=1 "*) refused=$((refused + 1)) ;; *) fail "unprivileged flush: $got" ;; esac
got=$(su -s /bin/sh nobody -c "qostest nl --cmd 2 --attr 1:u16:4500")
case "$got" in "errno=1 "*) refused=$((refused + 1)) ;; *) fail "unprivileged delete: $got" ;; esac
expect_eq "rules after unprivileged requests" "$(tcpchains -L | grep -c '^rule')" 1
echo "$refused malformed or unprivileged requests refused precisely"

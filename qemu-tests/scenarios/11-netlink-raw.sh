# Raw requests the tools never send: the kernel's policy and the module's own checks
# refuse each one with the right errno, blame the right attribute, give a message, and
# create nothing. The requests are built from the ABI's constants (rust/src/abi.rs) by
# `qostest badreq` (userspace/qostest/src/badreq.rs), which checks every answer and
# prints `correct=N`, or a WRONG line per wrong answer and fails.
total=0
phase() {
	out=$("$@") || fail "$*: $out"
	total=$((total + ${out##*correct=}))
}
phase qostest badreq --phase rules
expect_eq "no rule half-created" "$(tcpchains -L | grep -c '^rule')" 0
# Conditions need their rule for the matcher checks to be reached; the phase ends with
# one well-formed raw condition, which must be accepted.
tcpchains -A a -p 4500 -o 4501
phase qostest badreq --phase conditions
expect_eq "no group half-created" "$(skex -L | grep -c '^group')" 0
expect_eq "rules" "$(tcpchains -L | grep -c '^rule')" 1
expect_eq "conditions" "$(tcpchains -L -j | grep -c '"out_port"')" 1
# Unprivileged: every mutation is refused with EPERM before any parsing.
phase su -s /bin/sh nobody -c "qostest badreq --phase unprivileged"
expect_eq "rules after unprivileged requests" "$(tcpchains -L | grep -c '^rule')" 1
echo "$total malformed, valid or unprivileged raw requests answered precisely"

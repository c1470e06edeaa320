# suite-cost: 150
# Every per-namespace cap returns its documented errno (ENOSPC) and extack message, with
# the same configuration before and after the refusal, and another namespace still
# configures and forwards while this one is at every cap: rules (256), conditions of a
# content and a probabilistic rule (1,024), string bytes of a content rule (16,384),
# meters (1,024), socket groups (64), ports in a group (16), prioritized ports (16).
# (The address-rule cap, 10,000 conditions, is 16-ruleset's; a content listener's
# waiting connections, 1,024, are 14-content's; a queue's cap, 31-prio's.) The requests
# go through `qostest nl --batch`, one process for many requests. What an unprivileged
# owner of namespaces can do, and the charge to its memory cgroup, are 41-userns's.
# want OUTCOME MESSAGE WHAT: OUTCOME is ENOSPC (28) with a message starting MESSAGE.
want() {
	case "$1" in "errno=28 "*"msg=$2"*) ;; *) fail "$3: got '$1', want ENOSPC and '$2'" ;; esac
}
# at_cap N MESSAGE WHAT: of the requests on stdin (qostest nl --batch lines), the first N
# are accepted and the next is refused with ENOSPC and MESSAGE.
at_cap() {
	qostest nl --batch >/tmp/cap.out
	n=$(head -n "$1" /tmp/cap.out | grep -c '^ok$' || true)
	[ "$n" = "$1" ] || fail "$3: $n of $1 accepted: $(grep -v '^ok$' /tmp/cap.out | head -n 3)"
	want "$(sed -n "$(($1 + 1))p" /tmp/cap.out)" "$2" "$3: one more"
}
# Rules and their conditions first: rule-set files hold the prioritized queues too.
# Rules: 256 in one rule set, then one more.
for p in $(seq 12001 12256); do echo "-A a -p $p -o 9999"; done >/tmp/256.rules
tcpchains --restore /tmp/256.rules || fail "256 rules"
before=$(tcpchains --save-all)
msg=$(tcpchains -A a -p 12257 -o 9999 2>&1) && fail "a 257th rule was accepted"
case "$msg" in *"too many rules in this namespace (256)"*) ;; *) fail "the 257th rule: $msg" ;; esac
# The refusal left everything as it was.
[ "$(tcpchains --save-all)" = "$before" ] || fail "a refusal changed the configuration"
# Conditions: a content rule and a probabilistic one take 1,024 each (replacing two of
# the 256 rules), then one more.
tcpchains -D -p 12255 && tcpchains -D -p 12256
tcpchains -A c -p 12255 -o 9999 && tcpchains -A d -p 12256 -o 9999
for i in $(seq 1 1025); do echo "--cmd 4 --attr 1:u16:12255 --attr 10:u16:9998 --attr 16:bytes:s$i"; done | at_cap 1024 "too many conditions in this rule" "1,024 strings"
for i in $(seq 1 1025); do echo "--cmd 4 --attr 1:u16:12256 --attr 10:u16:9998 --attr 15:u16:1"; done | at_cap 1024 "too many conditions in this rule" "1,024 weights"
# String bytes: 64 strings of 255 bytes (16,320) fit a content rule, the 65th does not
# (each its own branch of the automaton: ~16,200 states).
tcpchains -D -p 12255 && tcpchains -A c -p 12255 -o 9999
long=$(printf 'x%.0s' $(seq 1 250))
for i in $(seq 10 74); do echo "--cmd 4 --attr 1:u16:12255 --attr 10:u16:9998 --attr 16:bytes:$i$long###"; done | at_cap 64 "the strings of a content rule exceed 16384 bytes in total" "64 strings of 255 bytes"
states=$(tcpchains -L -j -p 12255 | tr -d ' \n' | sed -n 's/.*"automaton_states":\([0-9]*\).*/\1/p')
[ "${states:-0}" -gt 16000 ] && [ "$states" -le 16391 ] || fail "automaton of $states states"
# Socket groups: 64, then one more.
for i in $(seq 1 65); do echo "--cmd 12 --attr 24:u32:$i --attr 25:u8:1"; done | at_cap 64 "too many socket groups in this namespace (64)" "64 groups"
# Ports in a group: 16, then one more.
for p in $(seq 9201 9217); do echo "--cmd 16 --attr 24:u32:1 --attr 1:u16:$p"; done | at_cap 16 "too many ports in this group (16)" "16 ports in a group"
# Meters: the group's 16 ports and the rules' two targets are metered; as many more as
# fit in 1,024, then one more.
have=$(netmeter -j | tr -d ' ' | grep -o '"port":[0-9]*' | sort -u | wc -l)
room=$((1024 - have))
for p in $(seq 10001 $((10001 + room))); do echo "--cmd 9 --attr 1:u16:$p"; done | at_cap $room "too many metered ports in this namespace (1024)" "1,024 meters"
[ "$(netmeter -j | tr -d ' ' | grep -o '"port":[0-9]*' | sort -u | wc -l)" = 1024 ] || fail "not 1,024 meters"
[ "$(skex -L -j | grep -o '"id"' | wc -l)" = 64 ] || fail "not 64 groups"
[ "$(skex -L -j -g 1 | grep -o '"port"' | wc -l)" = 16 ] || fail "not 16 ports in group 1"
# Prioritized ports: 16, then one more (their ports have meters already, so the meter
# cap does not come first).
for p in $(seq 10001 10017); do echo "--cmd 18 --attr 1:u16:$p"; done | at_cap 16 "too many prioritized ports in this namespace (16)" "16 prioritized ports"
[ "$(netmeter -Q -j | tr -d ' ' | grep -o '"port":[0-9]*' | sort -u | wc -l)" = 16 ] || fail "not 16 prioritized ports"
# Another namespace configures and forwards meanwhile, and this one still answers.
unshare -n sh -c '
	ip link set lo up
	qostest serve --port 9302 --tag other >/tmp/other.log 2>&1 &
	for i in $(seq 1 60); do grep -q ready /tmp/other.log && break; sleep 0.05; done
	tcpchains -A a -p 9300 -o 9302 && netmeter -A 9303 && skex -N 1 -t rate -r 10 &&
		qostest load --to 127.0.0.1:9300 --count 5 --expect other >/dev/null
	rc=$?; kill %1; exit $rc' || fail "another namespace while this one is at every cap"
# Everything goes at once (1,024 meters make every rescan of the sensors long).
: >/tmp/empty.conf
tcpchains --restore-all /tmp/empty.conf || fail "taking everything away"
echo "at every cap with ENOSPC and its message: 64 groups, 16 ports in a group, 1,024 meters, 16 prioritized ports, 256 rules, 1,024 strings, 1,024 weights, 16,384 string bytes ($states states); another namespace unaffected"

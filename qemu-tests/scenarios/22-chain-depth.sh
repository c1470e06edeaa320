# suite-cost: 90 (seconds in the pool on the debug kernel: started early)
# The rules in force are always one set that passed the chain check, also while a rule
# set replaces another. Two sets of depth 1 each: X has rules on the even ports of
# B..B+2K (B+2i -> B+2i+1), Y on the odd ones (B+2i+1 -> B+2i+2, the last to the server
# on B+2K). Neither lets a connection to B reach the server. A replacement creates the
# new rules' listeners before it switches; when they forwarded at once while the old
# rules still forwarded too (the module before this test), B -> B+1 -> ... -> B+2K was
# a live chain of 2K = 128 rules for a moment: connections crossed all of them to the
# server (and before the nesting limit the softirq recursion overflowed the stack). Now
# a new rule holds what it receives until the switch, which puts every rule of the set
# in force at one instant, and a rule that goes holds from then until it closes. So
# under load, with the sets alternating: some connections are held by B+1 across a
# switch (the window is hit), none gets past two rules (B in X, then B+1 in Y), none
# reaches the server, none hangs, and the kernel reports nothing.
B=30000
K=64
serve $((B + 2 * K)) end --mode epoll
: >/tmp/x.rules; : >/tmp/y.rules
for i in $(seq 0 $((K - 1))); do
	echo "-A a -p $((B + 2 * i)) -o $((B + 2 * i + 1)) --dual-stack" >>/tmp/x.rules
	echo "-A a -p $((B + 2 * i + 1)) -o $((B + 2 * i + 2)) --dual-stack" >>/tmp/y.rules
done
tcpchains --restore /tmp/x.rules
R=$(heavy 6 4 20)
bg sh -c "while [ ! -e /tmp/chain.stop ]; do
	qostest load --to 127.0.0.1:$B --count 20 --concurrency 4 --size 16 --timeout 20 --expect end >>/tmp/chain.load 2>&1
done; touch /tmp/chain.done"
# Read right after each replacement, whose window they saw: B+1's forwards are the
# connections it held across the switch into Y; a forward by B+2 .. B+5 would be a
# connection three or more rules deep.
held=0
deep=0
for r in $(seq 1 "$R"); do
	tcpchains --restore /tmp/y.rules
	held=$((held + $(stat_of $((B + 1)) forwarded)))
	deep=$((deep + $(stat_of $((B + 3)) forwarded) + $(stat_of $((B + 5)) forwarded)))
	tcpchains --restore /tmp/x.rules
	deep=$((deep + $(stat_of $((B + 2)) forwarded) + $(stat_of $((B + 4)) forwarded)))
done
touch /tmp/chain.stop
for i in $(seq 1 600); do [ -e /tmp/chain.done ] && break; sleep 0.1; done
[ -e /tmp/chain.done ] || fail "a client hung"
rounds=$(grep -c '^ok=' /tmp/chain.load || true)
[ "$rounds" -gt 0 ] || fail "no load round finished: $(tail -5 /tmp/chain.load)"
# Every connection of every round has an outcome: served, or refused/reset (a connection
# the module took and then could not place is reset); none timed out.
hung=$(grep '^conn ' /tmp/chain.load | grep -Eiv 'refused|reset|unexpected eof|end of file|broken pipe' | head -3)
[ -z "$hung" ] || fail "connections without an outcome: $hung"
served=$(sed -n 's/.*tags=end:\([0-9]*\).*/\1/p' /tmp/chain.load | awk '{ s += $1 } END { print s + 0 }')
expect_eq "forwards three or more rules deep during replacements" "$deep" 0
expect_eq "connections through the 128 rules to the server" "$served" 0
expect_eq "a final rule set connects B to the server" "$(qostest load --to 127.0.0.1:$B --count 2 --expect-refused --timeout 5 >/dev/null && echo refused)" refused
tcpchains -F
if [ "$held" -eq 0 ]; then
	echo "SKIP 22-held-across-switch: no connection arrived while a set was switching in this run"
fi
echo "$((2 * R)) replacements between two sets of 64 rules under load: $rounds load rounds, $held connections held across a switch, $deep forwarded past two rules, $served through the chain, none hung"

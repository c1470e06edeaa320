# suite-cost: 90 (seconds in the pool on the debug kernel: started early)
# The chain depth limit holds at run time, not only for the final rule set. Two rule
# sets of depth 1 each: X has rules on the even ports of B..B+2K (B+2i -> B+2i+1), Y on
# the odd ones (B+2i+1 -> B+2i+2, the last to the server on B+2K). Neither lets a
# connection to B reach the server: under X its target has no listener (refused), under
# Y nothing listens on B. But a replacement creates the new rules' listeners first,
# with their new policy, while the old rules keep theirs until the commit: for a moment
# B -> B+1 -> B+2 -> ... -> B+2K is a live chain of 2K = 128 rules, and each hop runs the
# next rule's hook from the previous one's (softirq recursion). The module runs at most
# 8 nested hooks per CPU and leaves the rest of such a chain to the listener's work
# item. Connections flow into B while the sets alternate; those caught in the window
# cross all 128 rules and reach the server; every connection is either served or
# refused (none hangs), and the kernel reports nothing (the suite reads its log).
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
# Connections that got 9 or more rules deep (past the nesting limit) while a set was
# replacing the other: counted by the rule at that depth, which the next replacement
# deletes, so it is read after each one.
deep=0
for r in $(seq 1 "$R"); do
	tcpchains --restore /tmp/y.rules
	deep=$((deep + $(stat_of $((B + 9)) forwarded) + $(stat_of $((B + 11)) forwarded)))
	tcpchains --restore /tmp/x.rules
	deep=$((deep + $(stat_of $((B + 10)) forwarded) + $(stat_of $((B + 12)) forwarded)))
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
expect_eq "a final rule set connects B to the server" "$(qostest load --to 127.0.0.1:$B --count 2 --expect-refused --timeout 5 >/dev/null && echo refused)" refused
tcpchains -F
if [ "$deep" -eq 0 ]; then
	echo "SKIP 22-deep-chain: no connection got past 8 rules during a replacement in this run"
fi
echo "$((2 * R)) replacements between two sets of 64 rules under load: $rounds load rounds, $deep hops past 8 rules deep and $served connections through all 128 to the server, none hung"

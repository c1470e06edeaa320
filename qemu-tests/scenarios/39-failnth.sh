# suite-cost: 240
# Fault injection (testing.md F1): every allocation that each mutating command makes
# (rule, condition, rule set, meter, group, attach, prioritized queue: 31 cases) fails
# once in turn through the kernel's fail-nth, the whole path of the request counted (the
# netlink core, the generic netlink family, the module, the sockets it opens). Each
# attempt must fail with an errno and leave the configuration exactly as before (rules,
# conditions, counters, automaton sizes, meters, groups, queues and the namespace's
# listening sockets), or succeed with exactly what a run without a fault gives. Leaks
# are kmemleak's, after the final unload; any kernel report fails the suite.
if [ ! -d /sys/kernel/debug/failslab ]; then
	echo "SKIP failnth: this kernel has no fault injection (CONFIG_FAILSLAB)"
	exit 0
fi
out=$(qostest failnth 2>&1) || { echo "$out" | grep -v ", each clean$" | head -n 60; fail "a failed allocation left a wrong state"; }
summary=$(echo "$out" | tail -n 1)
cases=$(echo "$summary" | sed -n 's/.*cases=\([0-9]*\).*/\1/p')
points=$(echo "$summary" | sed -n 's/.*points=\([0-9]*\).*/\1/p')
[ "$cases" -ge 31 ] && [ "$points" -gt "$cases" ] || fail "too little swept: $summary"
# Nothing is left behind.
left=$(tcpchains --save-all | grep -v '^#' || true)
[ -z "$left" ] || fail "left after the sweep: $left"
echo "$(echo "$summary" | sed 's/^failnth: //'); fewest and most points: $(echo "$out" | grep 'fault points' | sort -t: -k2 -n | sed -n '1p;$p' | tr '\n' ' ')"

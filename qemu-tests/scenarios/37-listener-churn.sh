# suite-cost: 90
# Listener churn (testing.md L2): the servers behind an address rule, a content rule and
# a grouped port (an accept-rate group whose limit holds the server's accept() callers)
# start, serve for a moment and go away (killed with SIGKILL or SIGTERM, in turn), and
# stay away for a moment, over and over, while clients keep connecting to all three.
# Checked: no kernel report and nothing leaked (the suite), every connection a rule
# took counted exactly once (forwarded, or refused with its cause: the clients' attempts
# equal the rule's counters), connections that found no server reported as such
# ("refused no-listener" above 0), and the grouped port's meter back to nothing open.
tcpchains -A a -p 7800 -o 7802
tcpchains -A c -p 7801 -o 7803 --timeout 1000
tcpchains -a c -p 7801 -s "Host: x" -r 7803
skex -N 5 -t rate -r 20 -b 2
skex -a 5 -p 7804
N=$(heavy 600 300 6000)
qostest load --to 127.0.0.1:7800 --count "$N" --concurrency 4 --timeout 5 >/tmp/lc-a.out 2>&1 &
la=$!
qostest load --to 127.0.0.1:7801 --count "$N" --concurrency 4 --timeout 5 >/tmp/lc-c.out 2>&1 &
lc=$!
qostest load --to 127.0.0.1:7804 --count "$((N / 2))" --concurrency 8 --timeout 5 >/tmp/lc-g.out 2>&1 &
lg=$!
cycles=0
while kill -0 $la 2>/dev/null || kill -0 $lc 2>/dev/null || kill -0 $lg 2>/dev/null; do
	cycles=$((cycles + 1))
	[ $cycles -le 500 ] || fail "the clients did not finish in 500 cycles"
	qostest serve --port 7802 --tag a >/dev/null 2>&1 &
	s1=$!
	qostest serve --port 7803 --tag c >/dev/null 2>&1 &
	s2=$!
	qostest serve --port 7804 --tag g --threads 4 >/dev/null 2>&1 &
	s3=$!
	sleep 0.$((3 + cycles % 4))
	sig=KILL
	[ $((cycles % 2)) = 0 ] && sig=TERM
	kill -$sig $s1 $s2 $s3 2>/dev/null
	wait $s1 $s2 $s3 2>/dev/null || true
	# Nobody listens for a moment: connections find stale targets.
	sleep 0.2
done
wait $la $lc $lg 2>/dev/null || true
# Content connections still waiting for data go to their port within the timeout.
sleep 2
# rule_total PORT: the connections the rule counted (forwarded or refused, any cause).
rule_total() {
	tcpchains -L | sed -n "s/^rule $1 .*forwarded \([0-9]*\) default-hits [0-9]* waiting \([0-9]*\) refused no-listener \([0-9]*\) queue-full \([0-9]*\) family \([0-9]*\) other \([0-9]*\).*/\1 \2 \3 \4 \5 \6/p" |
		awk '{ print $1 + $2 + $3 + $4 + $5 + $6 }'
}
nolistener() { tcpchains -L | sed -n "s/^rule $1 .*refused no-listener \([0-9]*\) .*/\1/p"; }
attempts() { sed -n 's/^ok=\([0-9]*\) bad=\([0-9]*\) .*/\1 \2/p' "$1" | awk '{ print $1 + $2 }'; }
expect_eq "address rule: every attempt counted once" "$(rule_total 7800)" "$(attempts /tmp/lc-a.out)"
expect_eq "content rule: every attempt counted once" "$(rule_total 7801)" "$(attempts /tmp/lc-c.out)"
[ "$(nolistener 7800)" -gt 0 ] && [ "$(nolistener 7801)" -gt 0 ] ||
	fail "no stale target reported: $(tcpchains -L | grep '^rule')"
wait_meter 7804 open 0
expect_eq "grouped port: nothing waiting" "$(meter_of 7804 waiting)" 0
served=$(sed -n 's/^ok=\([0-9]*\) .*/\1/p' /tmp/lc-a.out /tmp/lc-c.out /tmp/lc-g.out | awk '{ s += $1 } END { print s }')
echo "listener churn: $cycles cycles, $((2 * N + N / 2)) connections ($served served), $(nolistener 7800) + $(nolistener 7801) found no listener"

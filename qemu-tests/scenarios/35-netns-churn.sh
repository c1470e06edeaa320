# suite-cost: 60
# Namespace deletion under load (testing.md L3): a namespace with everything the module
# keeps per namespace (an address rule and a content rule with connections in flight
# through them, a requested meter, an accept-rate group whose limit holds the server's
# accept() callers, a prioritized queue holding connections its server never accepts)
# dies mid-load, again and again. Each namespace's processes are killed at a random
# moment of its load; the namespace then goes away by itself (cleanup_net) with the
# connections in every state. The suite fails on any kernel report (KASAN, lockdep,
# ref_tracker for the namespace's references) and on a leak (kmemleak, at its end); here:
# every namespace had its configuration and traffic, and this namespace's rule still
# forwards meanwhile and after.
serve 7602 host
tcpchains -A a -p 7600 -o 7602
C=$(heavy 8 8 100)
i=0
held=0
forwarded=0
while [ $i -lt "$C" ]; do
	i=$((i + 1))
	# Up to 0.8 s of load before the kill, varied by the iteration.
	t=$(((i * 37) % 9))
	unshare -n sh -c '
		ip link set lo up
		qostest serve --port 7502 --tag a >/dev/null 2>&1 &
		qostest serve --port 7503 --tag c >/dev/null 2>&1 &
		qostest serve --port 7504 --tag p --start-file /nonexistent >/dev/null 2>&1 &
		qostest serve --port 7505 --tag g --threads 4 >/dev/null 2>&1 &
		for j in $(seq 1 60); do
			[ "$(netstat -ltn 2>/dev/null | grep -c ":750[2-5] ")" = 4 ] && break
			sleep 0.05
		done
		tcpchains -A a -p 7500 -o 7502
		tcpchains -A c -p 7501 -o 7503 --timeout 5000
		tcpchains -a c -p 7501 -s "Host: premium" -r 7503
		tcpchains -Q 7504 --classes 2 --depth 1
		tcpchains -A a -p 7506 -o 7504 --prio 1
		netmeter -A 7505
		skex -N 3 -t rate -r 1 -b 1
		skex -a 3 -p 7505
		qostest load --to 127.0.0.1:7500 --count 100000 --concurrency 4 --timeout 30 >/dev/null 2>&1 &
		qostest load --to 127.0.0.1:7501 --count 100000 --concurrency 4 --timeout 30 >/dev/null 2>&1 &
		qostest load --to 127.0.0.1:7506 --count 16 --concurrency 16 --timeout 30 >/dev/null 2>&1 &
		qostest load --to 127.0.0.1:7505 --count 100 --concurrency 8 --timeout 30 >/dev/null 2>&1 &
		sleep 0.$0
		# What the namespace holds at the kill: rules, the group, the meter, the queue.
		{ tcpchains -L; skex -L; netmeter; netmeter -Q; } >/tmp/ns-churn-state 2>&1
		netmeter -Q -p 7504 2>/dev/null | awk "NR > 1 { s += \$4 } END { print s + 0 }" >/tmp/ns-churn-held
		kill %1 %2 %3 %4 %5 %6 %7 %8 2>/dev/null
		wait' "$t" || fail "namespace $i"
	grep -q "^rule 7500" /tmp/ns-churn-state && grep -q "^rule 7501" /tmp/ns-churn-state &&
		grep -q "7505" /tmp/ns-churn-state || fail "namespace $i lacked its configuration: $(cat /tmp/ns-churn-state)"
	held=$((held + $(cat /tmp/ns-churn-held)))
	forwarded=$((forwarded + $(sed -n 's/^rule 7500 .* forwarded \([0-9]*\) .*/\1/p' /tmp/ns-churn-state)))
	# This namespace's rule is untouched by the others' deaths.
	qostest load --to 127.0.0.1:7600 --count 2 --expect host >/dev/null || fail "host rule after namespace $i"
done
# The namespaces go away asynchronously; this one still works once they have.
sleep 2
qostest load --to 127.0.0.1:7600 --count 20 --concurrency 4 --expect host >/dev/null || fail "host rule at the end"
# The cases happened: connections went through the rules and were held in the queues.
[ "$forwarded" -gt 0 ] && [ "$held" -gt 0 ] || fail "forwarded $forwarded, held $held at the kills"
echo "$C namespaces deleted mid-load with rules, a meter, a group holding accept() callers and a prioritized queue ($forwarded connections forwarded, $held held at the kills)"

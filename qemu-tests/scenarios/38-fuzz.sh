# suite-cost: 120
# Structure-aware fuzzing of the generic netlink family (testing.md G3): `qostest fuzz`
# sends valid, near-valid and malformed messages built from the ABI (rust/src/abi.rs) at
# the ports the traffic uses, while clients connect through a rule, a server behind it
# is killed and restarted, an accept-rate group with a lease holds the other server's
# accept() callers and its timer runs, and a meter watches a third. The fuzzer checks
# every answer (one final answer per request that asks, well-formed replies, an extack
# message with every refusal); the suite checks the kernel log (KASAN, lockdep, WARN)
# and, after the final unload, kmemleak. The seed is printed, and with a failure the
# command that replays it (`qostest fuzz --seed S --count N --ports P`, any kernel):
# CI sends a short run, `scripts/test --full` 200,000 messages.
N=$(heavy 20000 8000 200000)
SEED=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
PORTS=7700,7701,7702,7703,7704
serve 7701 a --threads 4
serve 7703 c
# What the fuzzer keeps tearing down, put back every half second: a rule on 7700 with an
# address condition to the churned server, a leased rate group on 7701, a meter on 7703.
baseline() {
	while :; do
		tcpchains -A a -p 7700 -o 7701 2>/dev/null
		tcpchains -a a -p 7700 -i 127.0.0.2 -m 255.255.255.255 -r 7702 2>/dev/null
		skex -N 1 -t rate -r 200 -b 20 2>/dev/null
		skex -a 1 -p 7701 2>/dev/null
		skex -s 1 -r 100 --lease 300ms 2>/dev/null
		netmeter -A 7703 2>/dev/null
		sleep 0.5
	done
}
bg baseline
add_client_addrs 127.0.0.2/32
# Listener churn: the server behind the condition comes and goes.
churn() {
	while :; do
		qostest serve --port 7702 --tag b >/dev/null 2>&1 &
		p=$!
		sleep 0.4
		kill -9 $p 2>/dev/null
		wait $p 2>/dev/null
		sleep 0.1
	done
}
bg churn
# Clients, through the rule (to 7701, or from 127.0.0.2 to the churned 7702) and straight
# to the metered port. Failures are expected whenever the fuzzer deleted what they use.
clients() {
	while :; do
		qostest load --to 127.0.0.1:7700 --count 20 --concurrency 2 --timeout 2 2>/dev/null | grep '^ok=' >>/tmp/clients.log || true
		qostest load --to 127.0.0.1:7700 --from 127.0.0.2 --count 10 --concurrency 2 --timeout 2 2>/dev/null | grep '^ok=' >>/tmp/clients.log || true
		qostest load --to 127.0.0.1:7703 --count 10 --concurrency 2 --timeout 2 2>/dev/null | grep '^ok=' >>/tmp/clients.log || true
	done
}
bg clients
sleep 1
out=$(qostest fuzz --seed "$SEED" --count "$N" --ports "$PORTS" 2>&1) || {
	echo "$out" | tail -n 30
	fail "fuzz seed $SEED found violations (replay: qostest fuzz --seed $SEED --count $N --ports $PORTS)"
}
summary=$(echo "$out" | tail -n 1)
echo "$summary" | grep -q "sent=$N " || fail "the fuzzer stopped early: $summary"
for p in $PIDS; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=""
# Traffic went through while it ran.
served=$(sed -n 's/^ok=\([0-9]*\) .*/\1/p' /tmp/clients.log | awk '{ s += $1 } END { print s + 0 }')
[ "$served" -gt 0 ] || fail "no client was served while the fuzzer ran"
# Take away everything it left (an empty configuration restored): nothing may remain.
: >/tmp/empty.conf
tcpchains --restore-all /tmp/empty.conf || fail "restoring the empty configuration"
left=$(tcpchains --save-all | grep -v '^#' || true)
[ -z "$left" ] || fail "left after the flush: $left"
echo "seed $SEED: $(echo "$summary" | sed 's/^fuzz: seed=[0-9]* //'); $served connections served meanwhile"

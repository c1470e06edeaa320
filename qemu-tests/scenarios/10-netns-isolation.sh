# Rules are per network namespace: another namespace neither sees nor is affected by
# them, and deleting a namespace with rules and traffic is clean.
serve 7802 srv
tcpchains -A a -p 7800 -o 7802
unshare -n sh -c 'ip link set lo up; [ -z "$(tcpchains -L)" ] && tcpchains -A a -p 7800 -o 7802 && tcpchains -L | grep -q "^rule 7800"' || fail "isolation"
expect_eq "rules here" "$(tcpchains -L | grep -c '^rule')" 1
# A namespace that dies with a rule and connections in flight.
unshare -n sh -c 'ip link set lo up; qostest serve --port 7902 --tag x >/dev/null & sleep 0.3; tcpchains -A a -p 7900 -o 7902; qostest load --to 127.0.0.1:7900 --count 200 --concurrency 8 >/dev/null 2>&1 & sleep 0.5; kill %1'
qostest load --to 127.0.0.1:7800 --count 20 --expect srv

# One namespace's long command does not hold up another's: each namespace has its own
# configuration lock. Namespace A flushes 64 rules (made by one restore; 128 listeners
# close, each waiting for RCU grace periods); meanwhile requests here, sent every 50 ms by
# one process (qostest nl --batch --time: no process start per request), must be answered
# without waiting for it. With one lock for all namespaces one of them waited for nearly
# the whole flush. The kernel's answer time is what is compared, not a command's.
rm -f /tmp/flush.start /tmp/flush.ms
unshare -n sh -c 'ip link set lo up
	for p in $(seq 7000 7063); do echo "-A a -p $p -o 9"; done >/tmp/flush.rules
	tcpchains --restore /tmp/flush.rules
	t0=$(awk "{ printf \"%d\", \$1 * 1000 }" /proc/uptime); touch /tmp/flush.start
	tcpchains -F
	echo $(($(awk "{ printf \"%d\", \$1 * 1000 }" /proc/uptime) - t0)) >/tmp/flush.ms' &
a=$!
for i in $(seq 1 600); do [ -e /tmp/flush.start ] && break; sleep 0.05; done
# RULE_DEL (2) of a port without a rule: takes this namespace's lock, answers ENOENT.
while [ ! -e /tmp/flush.ms ]; do echo "--cmd 2 --attr 1:u16:5999"; sleep 0.05; done |
	qostest nl --batch --time >/tmp/nl.times || fail "qostest nl --batch"
wait $a
n=$(grep -c . /tmp/nl.times)
expect_eq "requests answered ENOENT" "$(grep -c '^errno=2 ' /tmp/nl.times)" "$n"
worst=$(sed 's/.* ms=//' /tmp/nl.times | sort -n | tail -1)
flush=$(cat /tmp/flush.ms)
if [ "$flush" -lt 1000 ]; then
	echo "SKIP 10-lock-per-namespace: the flush took only $flush ms, too short to tell"
else
	[ "$n" -gt 0 ] || fail "no request was answered during the $flush ms flush"
	[ "$worst" -lt $((flush / 2)) ] || fail "a request here waited $worst ms during another namespace's $flush ms flush"
fi
echo "namespaces isolated; $n requests here during another namespace's $flush ms flush, slowest answer $worst ms"

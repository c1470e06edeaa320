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
# configuration lock. Namespace A flushes 64 rules (made by one restore) (128 listeners close, each waiting
# for RCU grace periods); meanwhile commands here must answer promptly. (With one lock
# for all namespaces they waited for the whole flush.)
rm -f /tmp/flush.start /tmp/flush.ms
unshare -n sh -c 'ip link set lo up
	for p in $(seq 7000 7063); do echo "-A a -p $p -o 9"; done >/tmp/flush.rules
	tcpchains --restore /tmp/flush.rules
	t0=$(awk "{ printf \"%d\", \$1 * 1000 }" /proc/uptime); touch /tmp/flush.start
	tcpchains -F
	echo $(($(awk "{ printf \"%d\", \$1 * 1000 }" /proc/uptime) - t0)) >/tmp/flush.ms' &
a=$!
for i in $(seq 1 600); do [ -e /tmp/flush.start ] && break; sleep 0.05; done
worst=0; n=0
while [ ! -e /tmp/flush.ms ]; do
	t0=$(now_ms); tcpchains -L >/dev/null; dt=$(($(now_ms) - t0))
	[ "$dt" -gt "$worst" ] && worst=$dt
	n=$((n + 1))
done
wait $a
flush=$(cat /tmp/flush.ms)
if [ "$flush" -lt 1000 ]; then
	echo "SKIP 10-lock-per-namespace: the flush took only $flush ms, too short to tell"
else
	[ "$worst" -lt $((flush / 2)) ] || fail "a command here waited $worst ms during another namespace's $flush ms flush"
fi
echo "namespaces isolated; $n commands here during another namespace's $flush ms flush, slowest $worst ms"

# suite: exclusive (unloads and reloads the module)
# A prioritized queue holding connections when the module unloads: they go to the
# server's accept queue, which has room for them, and are served by the unmodified
# server once it accepts. Then namespaces deleted while their queues hold connections
# (the clients gone, the server gone): the held connections keep no namespace alive, the
# namespace exit closes the queues, and nothing leaks (kmemleak, ref_tracker).
add_client_addrs 10.0.9.1/32
rm -f /tmp/go
serve 7982 unl --start-file /tmp/go
tcpchains -Q 7982 --classes 2 --depth 1
tcpchains -A a -p 7980 -o 7982 --prio 1
tcpchains -a a -p 7980 -i 10.0.9.1/32 -r 7982 --prio 0
qostest load --to 127.0.0.1:7980 --count 5 --concurrency 5 --expect unl --timeout 60 >/tmp/u1.out 2>&1 &
a=$!
qostest load --to 127.0.0.1:7980 --from 10.0.9.1 --count 3 --concurrency 3 --expect unl --timeout 60 >/tmp/u0.out 2>&1 &
b=$!
held() { netmeter -Q -p 7982 | awk 'NR > 1 { s += $4 } END { print s + 0 }'; }
for i in $(seq 1 100); do
	[ "$(held)" = 7 ] && break
	sleep 0.1
done
expect_eq "held before the unload" "$(held)" 7
rmmod openqos || fail "rmmod with connections held"
expect_eq "in the server's queue after the unload" \
	"$(awk '$4 == "0A" && $2 ~ /:1F2E$/ { print $5 }' /proc/net/tcp | cut -d: -f2 | head -1)" \
	"00000008"
touch /tmp/go
wait $a || fail "class 1 across the unload: $(cat /tmp/u1.out)"
wait $b || fail "class 0 across the unload: $(cat /tmp/u0.out)"
insmod /openqos.ko
echo "unload with 7 held: handed to the server's queue, all 8 served"

C=$(heavy 6 3 20)
for i in $(seq 1 "$C"); do
	unshare -n sh -c '
		ip link set lo up
		qostest serve --port 7992 --tag x --start-file /nonexistent >/dev/null &
		sleep 0.3
		tcpchains -Q 7992 --classes 2 --depth 1 --deadline 1:60000
		tcpchains -A a -p 7990 -o 7992 --prio 1
		qostest load --to 127.0.0.1:7990 --count 20 --concurrency 20 --timeout 30 >/dev/null 2>&1 &
		for j in $(seq 1 50); do
			netmeter -Q -p 7992 | awk "NR == 3 && \$4 > 0 { ok = 1 } END { exit !ok }" && break
			sleep 0.1
		done
		netmeter -Q -p 7992 >/tmp/ns-held
		kill %1 %2
		wait' || fail "namespace $i"
	grep -q . /tmp/ns-held || fail "namespace $i held nothing"
done
# The namespaces are dismantled asynchronously (cleanup_net): give them a moment, then
# the module unloads cleanly (its pernet exit ran for each of them).
sleep 2
rmmod openqos || fail "rmmod after $C namespace deletions"
insmod /openqos.ko
echo "$C namespaces deleted with connections held in their prioritized queues"

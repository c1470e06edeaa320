# suite: exclusive (unloads and reloads the module)
# 20 cycles (5 on the debug kernel, 100 with --full): load the module, configure, run traffic, unload while connections are in
# flight. Clients may see resets during unload, never a hang; the kernel must not splat.
add_client_addrs 10.9.0.1/32
serve 7702 srv --mode epoll
C=$(heavy 20 5 100)
for i in $(seq 1 "$C"); do
	lsmod | grep -q openqos || insmod /openqos.ko
	tcpchains -A a -p 7700 -o 7702
	tcpchains -a a -p 7700 -i 10.9.0.0/16 -r 7702
	qostest load --to 127.0.0.1:7700 --count 30 --concurrency 8 --expect srv --timeout 30 >/dev/null
	qostest load --to 127.0.0.1:7700 --count 400 --concurrency 16 --timeout 5 >/dev/null 2>&1 &
	l=$!
	sleep 0.3
	rmmod openqos || fail "rmmod failed in cycle $i"
	wait $l || true
done
insmod /openqos.ko
qostest load --to 127.0.0.1:7702 --count 10 --expect srv >/dev/null
echo "$C unload cycles under load"

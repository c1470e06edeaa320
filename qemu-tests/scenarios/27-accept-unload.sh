# suite: exclusive (unloads and reloads the module)
# Unload against accept() in flight on metered ports: many threads blocked in accept()
# (inside the wrapper), and threads calling non-blocking accept() in a busy loop (every
# call loads the listener's wrapped table in do_accept, gives it to the new socket, and
# releases that socket through it when there is no connection), while clients connect.
# Each cycle unloads the module in the middle of it: the servers serve every connection
# and the kernel reports nothing (do_accept may keep the table across sleeps, so the
# tables outlive the module with the protocol's functions in them).
T=$(heavy 32 16 64)
serve 8271 blk --threads "$T"
serve 8272 spin --mode spin --threads 3
C=$(heavy 6 2 20)
N=$(heavy 200 60 1000)
for i in $(seq 1 "$C"); do
	lsmod | grep -q openqos || insmod /openqos.ko
	netmeter -A 8271
	netmeter -A 8272
	expect_eq "metered listeners of 8271" "$(meter_of 8271 listeners)" 1
	expect_eq "metered listeners of 8272" "$(meter_of 8272 listeners)" 1
	qostest load --to 127.0.0.1:8271 --count 8 --concurrency 4 --expect blk >/dev/null ||
		fail "load before unload, cycle $i"
	expect_eq "accepted through the wrapper, cycle $i" "$(meter_of 8271 accepted)" 8
	qostest load --to 127.0.0.1:8271 --count "$N" --concurrency 8 --expect blk --timeout 20 >/tmp/l1.out &
	l1=$!
	qostest load --to 127.0.0.1:8272 --count "$N" --concurrency 8 --expect spin --timeout 20 >/tmp/l2.out &
	l2=$!
	sleep 0.5
	t0=$(now_ms)
	rmmod openqos || fail "rmmod failed in cycle $i"
	t1=$(now_ms)
	wait $l1 || fail "blocking accepters across the unload, cycle $i: $(cat /tmp/l1.out)"
	wait $l2 || fail "spinning accepters across the unload, cycle $i: $(cat /tmp/l2.out)"
	ms="$ms $((t1 - t0))"
done
# Both servers serve on, with the protocol's operations.
qostest load --to 127.0.0.1:8271 --count 20 --concurrency 8 --expect blk >/dev/null || fail "after"
qostest load --to 127.0.0.1:8272 --count 20 --concurrency 8 --expect spin >/dev/null || fail "after"
insmod /openqos.ko
echo "$C unloads against $T blocked and 3 spinning accepters under load: every connection served (rmmod ms:$ms)"

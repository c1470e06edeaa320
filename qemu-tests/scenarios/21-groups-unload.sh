# suite: exclusive (unloads and reloads the module)
# Socket groups with servers held back by them: a server asleep in accept() on an
# accept-rate quota and one asleep in send() on an output quota. Deleting the group
# wakes them and they go on unlimited; so does rmmod, which must not wait for the
# quota; transfers stay intact; a namespace that goes away takes its groups along.
T0=$(now_ms)
serve 8501 acc
serve 8502 bulk --send 3000000
skex -N 1 -t rate -r 1 -b 1
skex -a 1 -p 8501
skex -N 2 -t output -r 20K
skex -a 2 -p 8502
qostest load --to 127.0.0.1:8501 --count 5 --concurrency 5 --timeout 60 --expect acc >/tmp/acc.out &
a=$!
qostest load --to 127.0.0.1:8502 --count 1 --size 10 --recv 3000000 --timeout 120 --expect bulk >/tmp/bulk.out &
b=$!
# wait_asleep GROUP: a task sleeps on the group's quota (a sender is awake for a moment
# after each piece it sends: look a few times).
wait_asleep() {
	for i in $(seq 1 50); do
		[ "$(skex -L -j -g $1 | qostest json groups.0.sleeping)" = 1 ] && return 0
		sleep 0.1
	done
	fail "nobody asleep on group $1: $(skex -L -g $1)"
}
sleep 1
wait_asleep 1
wait_asleep 2
t0=$(now_ms)
rmmod openqos || fail "rmmod with callers asleep on quotas"
wait $a || fail "accepts after unload: $(cat /tmp/acc.out)"
wait $b || fail "transfer across unload: $(cat /tmp/bulk.out)"
dt=$(($(now_ms) - t0))
grep -q "ok=1 " /tmp/bulk.out || fail "transfer: $(cat /tmp/bulk.out)"
grep -q "ok=5 " /tmp/acc.out || fail "accepts: $(cat /tmp/acc.out)"
# 3 MB at 20 KiB/s would take minutes: unloading lifted the limit.
[ "$dt" -lt 30000 ] || fail "unload and the rest took $dt ms"
insmod /openqos.ko
T1=$(now_ms)

# Group deletion with a server asleep in send(): it finishes unlimited, intact.
skex -N 3 -t output -r 20K
skex -a 3 -p 8502
t0=$(now_ms)
qostest load --to 127.0.0.1:8502 --count 1 --size 10 --recv 3000000 --timeout 120 --expect bulk >/tmp/bulk.out &
b=$!
sleep 2
wait_asleep 3
tx=$(skex -L -j -g 3 | qostest json groups.0.admitted)
dt=$(($(now_ms) - t0))
# At most the burst (4 KiB) plus 20 KiB/s since the group exists.
[ "$tx" -le $((4096 + 20480 * dt / 1000)) ] || fail "20 KiB/s let $tx bytes through in $dt ms"
t0=$(now_ms)
skex -X 3
wait $b || fail "transfer after deletion: $(cat /tmp/bulk.out)"
dt=$(($(now_ms) - t0))
grep -q "ok=1 " /tmp/bulk.out || fail "transfer: $(cat /tmp/bulk.out)"
[ "$dt" -lt 20000 ] || fail "the rest after deletion took $dt ms"
T2=$(now_ms)
# Detaching a port lifts its limit too; the meter stays.
skex -N 4 -t output -r 20K
skex -a 4 -p 8502
qostest load --to 127.0.0.1:8502 --count 1 --size 10 --recv 3000000 --timeout 120 --expect bulk >/tmp/bulk.out &
b=$!
sleep 1
wait_asleep 4
t0=$(now_ms)
skex -d 4 -p 8502
wait $b || fail "transfer after detach: $(cat /tmp/bulk.out)"
dt=$(($(now_ms) - t0))
grep -q "ok=1 " /tmp/bulk.out || fail "transfer: $(cat /tmp/bulk.out)"
# The sender asleep on the quota goes on unlimited (3 MB at 20 KiB/s would take minutes).
[ "$dt" -lt 20000 ] || fail "the rest after detach took $dt ms"
expect_eq "meter after detach" "$(meter_of 8502 grouped)" false
skex -X 4
# So does an accept group's: 40 connections at 1/s would take 39 s.
skex -N 5 -t rate -r 1 -b 1
skex -a 5 -p 8501
qostest load --to 127.0.0.1:8501 --count 40 --concurrency 40 --timeout 90 --expect acc >/tmp/acc.out &
a=$!
sleep 1
wait_asleep 5
t0=$(now_ms)
skex -d 5 -p 8501
wait $a || fail "accepts after detach: $(cat /tmp/acc.out)"
dt=$(($(now_ms) - t0))
grep -q "ok=40 " /tmp/acc.out || fail "accepts: $(cat /tmp/acc.out)"
[ "$dt" -lt 20000 ] || fail "the accepts after detach took $dt ms"
skex -X 5

T3=$(now_ms)
# A namespace with groups and servers asleep on them goes away.
cat >/tmp/ns.sh <<-'NS'
	. /qemu-tests/lib.sh
	serve 8601 nsacc
	skex -N 9 -t rate -r 1 -b 1
	skex -a 9 -p 8601
	qostest load --to 127.0.0.1:8601 --count 4 --concurrency 4 --timeout 5 >/dev/null 2>&1 &
	sleep 2
	skex -L
NS
unshare -n sh /tmp/ns.sh >/tmp/ns.out 2>&1 || true
grep -q "group 9 type rate" /tmp/ns.out || fail "namespace group: $(cat /tmp/ns.out)"
skex -L | grep -q "group 9" && fail "another namespace's group is visible here"
T4=$(now_ms)
echo "rmmod, group deletion and detach wake callers asleep in accept and send; netns exit (ms: unload $((T1 - T0)), deletion $((T2 - T1)), detach $((T3 - T2)), netns $((T4 - T3)))"

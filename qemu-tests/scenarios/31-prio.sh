# suite: seconds 60
# A prioritized accept queue for one unmodified server (tcpchains -Q): connections wait
# in the module, one queue per class, and go to the server in strict priority order
# (FIFO within a class) as it accepts, at most --depth in its own queue. Release order;
# every accept style; push-out order, exactly; deadlines; the server's listener closing
# with connections held; the queue's removal handing what it holds to the server; bad
# input refused with a message.
add_client_addrs 10.0.9.1/32 10.0.9.9/32 10.0.9.10/32 10.0.9.11/32 \
	10.0.9.20/32 10.0.9.21/32 10.0.9.22/32 10.0.9.23/32 10.0.9.24/32

# prio_of PORT CLASS FIELD: a counter of a class of a prioritized port.
prio_of() {
	netmeter -Q -j -p "$1" | qostest json "prios.0.classes.$2.$3"
}

# wait_prio PORT CLASS FIELD VALUE: waits up to 10 s for a class's counter.
wait_prio() {
	for i in $(seq 1 100); do
		[ "$(prio_of "$1" "$2" "$3")" = "$4" ] && return 0
		sleep 0.1
	done
	fail "port $1 class $2 $3: got $(prio_of "$1" "$2" "$3"), want $4; $(netmeter -Q -p "$1")"
}

# The three classes of one address rule: 10.0.9.1 class 0, 10.0.9.8/29 class 1,
# everyone else (the default) class 2.
classes_rule() {
	tcpchains -A a -p "$1" -o "$2" --prio 2
	tcpchains -a a -p "$1" -i 10.0.9.1/32 -r "$2" --prio 0
	tcpchains -a a -p "$1" -i 10.0.9.8/29 -r "$2" --prio 1
}

# 1. Release order. The server listens but accepts only once /tmp/go exists; with depth
# 1, the first connection goes into its queue and the others wait in the module: six of
# class 2, then three of class 1 (one address after the other), then three of class 0.
# The server then accepts the one already in its queue, class 0, class 1 in arrival
# order, class 2. The rule is deleted meanwhile: what the queue holds is not the rule's.
rm -f /tmp/go
serve 7902 prio --start-file /tmp/go --identity
tcpchains -Q 7902 --classes 3 --depth 1 --cap 64
classes_rule 7900 7902
qostest load --to 127.0.0.1:7900 --from 10.0.9.20 --count 6 --concurrency 6 --expect prio --timeout 60 >/tmp/c2.out 2>&1 &
p2=$!
wait_prio 7902 2 waiting 5
wait_meter 7902 waiting 1
for a in 9 10 11; do
	qostest load --to 127.0.0.1:7900 --from 10.0.9.$a --count 1 --expect prio --timeout 60 >/tmp/c1-$a.out 2>&1 &
	eval p1_$a=$!
	wait_prio 7902 1 waiting $((a - 8))
done
qostest load --to 127.0.0.1:7900 --from 10.0.9.1 --count 3 --concurrency 3 --expect prio --timeout 60 >/tmp/c0.out 2>&1 &
p0=$!
wait_prio 7902 0 waiting 3
tcpchains -D -p 7900
touch /tmp/go
wait $p0 || fail "class 0: $(cat /tmp/c0.out)"
wait $p1_9 && wait $p1_10 && wait $p1_11 || fail "class 1: $(cat /tmp/c1-*.out)"
wait $p2 || fail "class 2: $(cat /tmp/c2.out)"
order=$(sed -n 's/^identity peer=\([0-9.]*\):.*/\1/p' /tmp/serve-7902.log | tr '\n' ' ')
want="10.0.9.20 10.0.9.1 10.0.9.1 10.0.9.1 10.0.9.9 10.0.9.10 10.0.9.11 10.0.9.20 10.0.9.20 10.0.9.20 10.0.9.20 10.0.9.20 "
expect_eq "accept order" "$order" "$want"
for c in 0:3 1:3 2:6; do
	expect_eq "class ${c%:*} released" "$(prio_of 7902 ${c%:*} released)" "${c#*:}"
	expect_eq "class ${c%:*} waiting" "$(prio_of 7902 ${c%:*} waiting)" 0
done
echo "release order: $order"

# 2. Every accept style sees exactly the connections released, and none waits forever:
# blocking (4 threads), epoll, poll, select servers, three classes, depth 2.
N=$(heavy 60 18)
p=7910
for mode in blocking epoll poll select; do
	p=$((p + 2))
	if [ $mode = blocking ]; then
		serve $p $mode --mode blocking --threads 4
	else
		serve $p $mode --mode $mode
	fi
	tcpchains -Q $p --depth 2
	classes_rule $((p - 1)) $p
	qostest load --to 127.0.0.1:$((p - 1)) --from 10.0.9.1 --count $N --concurrency 4 --expect $mode --timeout 60 >/tmp/s0.out &
	a=$!
	qostest load --to 127.0.0.1:$((p - 1)) --from 10.0.9.9 --count $N --concurrency 4 --expect $mode --timeout 60 >/tmp/s1.out &
	b=$!
	qostest load --to 127.0.0.1:$((p - 1)) --count $N --concurrency 4 --expect $mode --timeout 60 >/tmp/s2.out ||
		fail "$mode, class 2: $(cat /tmp/s2.out)"
	wait $a || fail "$mode, class 0: $(cat /tmp/s0.out)"
	wait $b || fail "$mode, class 1: $(cat /tmp/s1.out)"
	for c in 0 1 2; do
		expect_eq "$mode: class $c released" "$(prio_of $p $c released)" "$N"
	done
done
echo "accept styles: $((3 * N)) connections each through blocking, epoll, poll and select servers"

# 3. Push-out, exactly. The server never accepts; depth 1, cap 3.
serve 7932 pushed --no-accept --backlog 16
tcpchains -Q 7932 --classes 3 --cap 3 --depth 1
classes_rule 7930 7932
# arrive FROM [refused]: one connection from FROM; waits until the queue has seen it.
n_arrived=0
arrive() {
	if [ "$2" = refused ]; then
		qostest load --to 127.0.0.1:7930 --from "$1" --expect-refused --timeout 30 >/tmp/a-$1.$n_arrived.out 2>&1 &
		eval refused_$n_arrived=$!
	else
		bg qostest load --to 127.0.0.1:7930 --from "$1" --timeout 120 >/dev/null 2>&1
	fi
	n_arrived=$((n_arrived + 1))
	# Every arrival is admitted (pushed out later or not) or refused.
	for i in $(seq 1 100); do
		seen=$(netmeter -Q -p 7932 | awk 'NR > 1 { s += $5 + $9 } END { print s + 0 }')
		[ "$seen" -ge "$n_arrived" ] && return 0
		sleep 0.1
	done
	fail "connection $n_arrived from $1 not seen: $(netmeter -Q -p 7932)"
}
arrive 10.0.9.20          # into the server's queue (depth 1)
wait_meter 7932 waiting 1
arrive 10.0.9.21          # held, class 2
arrive 10.0.9.22          # held, class 2
arrive 10.0.9.23 refused  # held, class 2: the cap (3) is reached
arrive 10.0.9.1           # class 0 pushes out the newest of class 2: .23
wait_prio 7932 2 pushed_out 1
wait $refused_3 || fail "10.0.9.23 was not reset: $(cat /tmp/a-10.0.9.23.3.out)"
arrive 10.0.9.22 refused  # class 2 again, full, nothing lower: refused itself
wait_prio 7932 2 refused 1
wait $refused_5 || fail "a class 2 arrival at the cap was not refused"
arrive 10.0.9.9           # class 1 pushes out .22 (the newest of class 2 now)
arrive 10.0.9.10 refused  # class 1 pushes out .21
wait_prio 7932 2 pushed_out 3
arrive 10.0.9.1           # class 0 pushes out the newest of class 1: .10
wait_prio 7932 1 pushed_out 1
wait $refused_7 || fail "10.0.9.10 (class 1, newest) was not pushed out"
arrive 10.0.9.11 refused  # class 1, nothing lower left: refused
wait_prio 7932 1 refused 1
wait $refused_9 || fail "a class 1 arrival with only higher classes held was not refused"
expect_eq "class 0 held" "$(prio_of 7932 0 waiting)" 2
expect_eq "class 1 held" "$(prio_of 7932 1 waiting)" 1
expect_eq "class 2 held" "$(prio_of 7932 2 waiting)" 0
expect_eq "class 0 never pushed out" "$(prio_of 7932 0 pushed_out)" 0
# Removing the queue hands what it holds to the server's queue (it has room).
tcpchains -X 7932
wait_meter 7932 waiting 4
echo "push-out: newest of the lowest class first, never a higher class; removal handed 3 to the server"

# 4. Deadlines. The server never accepts and its queue holds one connection (depth 1):
# class 1 (deadline 500 ms) connections are reset at their deadline, not served late.
serve 7942 late --no-accept
tcpchains -Q 7942 --classes 2 --depth 1 --deadline 1:500
tcpchains -A a -p 7940 -o 7942 --prio 1
bg qostest hold --to 127.0.0.1:7940 --count 1 --seconds 120
wait_meter 7942 waiting 1
out=$(qostest load --to 127.0.0.1:7940 --count 1 --expect-refused --timeout 20) ||
	fail "deadline: $out"
slowest=$(load_field "$out" max_refusal_ms)
[ "$slowest" -ge 450 ] || fail "a connection was reset after $slowest ms, before its 500 ms deadline"
out=$(qostest load --to 127.0.0.1:7940 --count 3 --concurrency 3 --expect-refused --timeout 20) ||
	fail "deadline: $out"
expect_eq "expired at the deadline" "$(prio_of 7942 1 expired)" 4
# A slow server (150 ms an accept): every connection is released before its deadline
# or reset at it; none is released late.
serve 7944 slow --accept-delay-ms 150
tcpchains -Q 7944 --classes 1 --depth 1 --deadline 0:600
tcpchains -A a -p 7943 -o 7944 --prio 0
qostest load --to 127.0.0.1:7943 --count 12 --concurrency 12 --expect slow --timeout 20 >/tmp/slow.out 2>&1 || true
rel=$(prio_of 7944 0 released)
exp=$(prio_of 7944 0 expired)
expect_eq "released + expired" "$((rel + exp))" 12
[ "$rel" -ge 1 ] && [ "$exp" -ge 1 ] || fail "slow server: released $rel, expired $exp"
worst=$(netmeter -Q -j -p 7944 | qostest json prios.0.classes.0.p99_delay_us)
# The bucket of the longest wait is at most 25 % wide.
[ "$worst" -le 750000 ] || fail "a connection was released after ${worst} us, past its 600 ms deadline"
echo "deadlines: 4 of 4 reset (one alone after ${slowest} ms); slow server released $rel, reset $exp, longest wait bucket ${worst} us"

# 5. The server's listener closes with connections held: they are reset (lost), not kept.
rm -f /tmp/never
serve 7952 gone --start-file /tmp/never
srv=${PIDS##* }
tcpchains -Q 7952 --classes 1 --depth 1
tcpchains -A a -p 7950 -o 7952 --prio 0
qostest load --to 127.0.0.1:7950 --count 4 --concurrency 4 --expect-refused --timeout 30 >/tmp/gone.out 2>&1 &
g=$!
wait_prio 7952 0 waiting 3
kill "$srv"
wait $g || fail "held connections of a closed listener were not reset: $(cat /tmp/gone.out)"
wait_prio 7952 0 lost 3
echo "listener closed: 3 held connections reset"

# 6. Bad input is refused with a message, and nothing is half-created.
nl() { qostest nl "$@"; }
got=$(nl --cmd 18 --attr 1:u16:7962 --attr 37:u32:0)
expect_eq "cap 0" "${got%% msg=*}" "errno=34 attr=prio-cap"
got=$(nl --cmd 18 --attr 1:u16:7962 --attr 36:u8:9)
expect_eq "9 classes" "${got%% msg=*}" "errno=34 attr=prio-classes"
# A prio-class nest (41 | NLA_F_NESTED) with prio 1 and deadline-ms 0.
got=$(nl --cmd 18 --attr 1:u16:7962 --attr 32809:hex:05002200010000000800270000000000)
case "$got" in "errno=22 attr=deadline-ms msg=a deadline is at least 1 ms"*) ;; *) fail "deadline 0: $got" ;; esac
expect_eq "nothing created" "$(netmeter -Q -p 7962 2>&1 | grep -c '^ *7962')" 0
tcpchains -Q 7962 --classes 2
msg=$(tcpchains -Q 7962 --deadline 2:100 2>&1) && fail "class 2 of 2 accepted"
case "$msg" in *"no such class"*) ;; *) fail "class out of range: $msg" ;; esac
msg=$(tcpchains -Q 7962 --classes 3 2>&1) && fail "classes changed"
case "$msg" in *"fixed when the queue is created"*) ;; *) fail "classes changed: $msg" ;; esac
msg=$(tcpchains -Q 7962 --cap 0 2>&1) && fail "cap 0 accepted"
msg=$(netmeter -D 7962 2>&1) && fail "the meter of a prioritized port was deleted"
case "$msg" in *"prioritized queue"*) ;; *) fail "meter deletion: $msg" ;; esac
tcpchains -A a -p 7960 -o 7962
msg=$(tcpchains -Q 7960 2>&1) && fail "a rule's own port was prioritized"
case "$msg" in *"a rule owns this port"*) ;; *) fail "rule port: $msg" ;; esac
msg=$(tcpchains -X 7961 2>&1) && fail "deleting a queue that does not exist"
case "$msg" in *"no prioritized queue"*) ;; *) fail "no queue: $msg" ;; esac
have=$(netmeter -Q | awk 'NR > 1 && $2 == 0' | grep -c .)
for p in $(seq 7970 $((7970 + 15 - have))); do tcpchains -Q $p; done
msg=$(tcpchains -Q 7999 2>&1) && fail "a 17th prioritized port"
case "$msg" in *"too many prioritized ports"*) ;; *) fail "17th: $msg" ;; esac
# The rule set saves and restores the queues and the classes.
tcpchains -S >/tmp/prio.rules
grep -q -- '-Q 7942 --classes 2 --cap 256 --depth 1 --deadline 1:500' /tmp/prio.rules || fail "save: $(cat /tmp/prio.rules)"
grep -q -- '-A a -p 7940 -o 7942 --prio 1' /tmp/prio.rules || fail "save: $(cat /tmp/prio.rules)"
tcpchains --restore /tmp/prio.rules
tcpchains -S | diff /tmp/prio.rules - || fail "restore is not exact"
echo "bad input refused; 16 prioritized ports at most; save and restore exact"

# 7. The same counters for Prometheus (netmeter --prometheus; the format itself is
# checked on the host by the reference parser), and the ABI handshake (-V).
netmeter --prometheus >/tmp/metrics.prom
grep -qx 'openqos_prio_released_connections_total{port="7902",class="0"} 3' /tmp/metrics.prom ||
	fail "metrics: $(grep 7902 /tmp/metrics.prom | head)"
grep -qx 'openqos_prio_pushed_out_connections_total{port="7942",class="1"} 0' /tmp/metrics.prom ||
	fail "metrics: $(grep 'pushed_out.*7942' /tmp/metrics.prom)"
netmeter --prometheus /tmp/node/openqos.prom 2>/dev/null && fail "wrote into a missing directory"
mkdir -p /tmp/node && netmeter --prometheus /tmp/node/openqos.prom || fail "textfile"
expect_eq "textfile families" "$(grep -c '^# TYPE' /tmp/node/openqos.prom)" "$(grep -c '^# TYPE' /tmp/metrics.prom)"
expect_eq "nothing but the textfile left" "$(ls /tmp/node)" openqos.prom
for t in tcpchains netmeter skex qosmgr; do
	$t -V | grep -q "(openqos ABI 3); module: ABI 3, loaded" || fail "$t -V: $($t -V)"
done
echo "metrics: $(grep -c '^# TYPE' /tmp/metrics.prom) families; tools and module speak ABI 3"

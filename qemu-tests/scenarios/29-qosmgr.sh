# suite: solo (holds a delay at a set point: no other load beside it)
# qosmgr closes the loop (the paper's Figure 5 configuration, in small): one server with
# a fixed pool of 2 workers (200 ms a connection: 10 connections/s in all) serves a
# premium port and a basic port; an address rule sends premium clients (10.7.0.1) to
# the first and everyone else to the second; an accept-rate group on the basic port is
# the actuator. Premium clients (4 at once) and basic clients (8 at once) keep the
# server overloaded. The workflow of qosmgr(8): identify a model at this load, design
# the gains by pole placement (checked with b halved and doubled), run: the premium
# class's mean delay settles at the set point. Then the fail-safe: qosmgr killed with
# SIGKILL leaves the basic class throttled only until its lease runs out (the kernel
# restores the group's rate); SIGTERM restores it at once. Bad configurations are
# refused with a message and nothing applied. The other actuators (a probabilistic
# rule's weight, a ratio group member's weight) are driven and checked briefly.
add_client_addrs 10.7.0.1/32
bg qostest pool --port 8701:premium --port 8702:basic --workers 2 --service-ms 200 >/tmp/pool.log 2>&1
for i in $(seq 1 100); do [ "$(grep -c ready /tmp/pool.log)" = 2 ] && break; sleep 0.05; done
[ "$(grep -c ready /tmp/pool.log)" = 2 ] || fail "pool server: $(cat /tmp/pool.log)"
tcpchains -A a -p 87 -o 8702
tcpchains -a a -p 87 -i 10.7.0.1/32 -r 8701
skex -N 5 -t rate -r 10 -b 1
skex -a 5 -p 8702
SP=600
cat >/tmp/q.toml <<EOF
period = "2s"
lease_periods = 3
status_file = "/tmp/qosmgr.status"

[[loop]]
name = "premium"
type = "delay"
port = 8701
set_point = "${SP}ms"
group = 5
min = 1
max = 9
safe = 9
slew = 3
min_samples = 4
EOF
bg qostest load --to 127.0.0.1:87 --from 10.7.0.1 --count 1000000 --concurrency 4 --size 16 --timeout 60
bg qostest load --to 127.0.0.1:87 --count 1000000 --concurrency 8 --size 16 --timeout 60
sleep 4

# Refused before anything runs: no gains yet, a port nobody meters, a ratio group.
set +e
qosmgr run -c /tmp/q.toml --check 2>/tmp/err; rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "qosmgr design" /tmp/err || fail "run without gains: rc $rc $(cat /tmp/err)"
sed 's/^port = 8701/port = 8799/' /tmp/q.toml | sed 's/^min_samples = 4/min_samples = 4\nkp = 0.001\nki = 0.001/' >/tmp/bad.toml
set +e
qosmgr run -c /tmp/bad.toml --check 2>/tmp/err; rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "port 8799: this port is not metered" /tmp/err || fail "unmetered port: rc $rc $(cat /tmp/err)"
skex -N 6 -t ratio
sed 's/^group = 5/group = 6/' /tmp/q.toml | sed 's/^min_samples = 4/min_samples = 4\nkp = 0.001\nki = 0.001/' >/tmp/bad.toml
set +e
qosmgr run -c /tmp/bad.toml --check 2>/tmp/err; rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "group 6 is a ratio group" /tmp/err || fail "ratio group: rc $rc $(cat /tmp/err)"
expect_eq "nothing applied" "$(skex -L -j -g 5 | qostest json groups.0.rate)" 10

# Identify (24 periods of 2 s, rates 3 and 7), then design.
qosmgr identify -c /tmp/q.toml -l premium --periods 24 --low 3 --high 7 --write >/tmp/ident.out 2>/tmp/ident.err ||
	fail "identify: $(tail -5 /tmp/ident.err) $(cat /tmp/ident.out)"
cat /tmp/ident.out
expect_eq "identify restores the rate" "$(skex -L -j -g 5 | qostest json groups.0.rate)" 10
qosmgr design -c /tmp/q.toml -l premium --settling 6 --overshoot 0.1 --write >/tmp/design.out 2>&1 ||
	fail "design: $(cat /tmp/design.out)"
cat /tmp/design.out
grep -q '^kp = ' /tmp/q.toml || fail "design wrote no gains"

# Run 30 periods; the last 12 are judged.
qosmgr run -c /tmp/q.toml --periods 30 --log /tmp/q.log
steps=$(grep -c '"loop":"premium"' /tmp/q.log || true)
[ "$steps" -ge 30 ] || fail "only $steps steps logged"
judged=$(grep '"loop":"premium"' /tmp/q.log | grep '"state":"run"' | tail -n 12 |
	sed -n 's/.*"measured_ms":\([0-9.]*\).*/\1/p')
n=$(echo "$judged" | grep -c . || true)
[ "$n" -ge 8 ] || fail "only $n measured periods at the end: $(tail -3 /tmp/q.log)"
mean=$(echo "$judged" | awk '{ s += $1 } END { printf "%d", s / NR }')
within=$(echo "$judged" | awk -v sp=$SP '$1 >= sp * 0.75 && $1 <= sp * 1.25 { k++ } END { print k + 0 }')
echo "premium delay over the last $n measured periods: mean $mean ms (set point $SP ms), $within within +-25 %"
within_pct "$mean" 80 120 "$SP" || fail "premium mean delay $mean ms, set point $SP ms"
[ $((within * 100)) -ge $((n * 60)) ] || fail "only $within of $n periods within +-25 % of the set point"
expect_eq "stopped: safe rate back" "$(skex -L -j -g 5 | qostest json groups.0.rate)" 9

# The other actuators: a probabilistic rule's condition weight (and, refused here, a
# ratio group member that is not one). The mechanism only: three periods, every value
# within min..max and logged with its actuator, the safe weight back at the end.
tcpchains -A d -p 88 -o 8701
tcpchains -a d -p 88 -r 8702 -c 5000
kp=$(sed -n 's/^kp = //p' /tmp/q.toml)
ki=$(sed -n 's/^ki = //p' /tmp/q.toml)
cat >/tmp/w.toml <<EOF
period = "1s"
lease_periods = 3
status_file = "/tmp/w.status"

[[loop]]
name = "share"
type = "delay"
port = 8701
set_point = "${SP}ms"
rule = 88
condition = 1
min = 1000
max = 9000
safe = 5000
min_samples = 1
kp = $kp
ki = $ki
EOF
qosmgr run -c /tmp/w.toml --periods 3 --log /tmp/w.log
expect_eq "share loop steps" "$(grep -c '"actuator":"weight of condition 1 of rule 88"' /tmp/w.log)" 3
grep '"loop":"share"' /tmp/w.log | sed -n 's/.*"value":\([0-9]*\).*/\1/p' |
	awk '$1 < 1000 || $1 > 9000 { bad = 1 } END { exit bad }' || fail "share outside 1000..9000: $(cat /tmp/w.log)"
tcpchains -S | grep -q -- '-a d -p 88 -c 5000 -r 8702' || fail "safe share not restored: $(tcpchains -S)"
set +e
sed 's/^condition = 1/condition = 5/' /tmp/w.toml >/tmp/bad.toml
qosmgr run -c /tmp/bad.toml --check 2>/tmp/err; rc=$?
[ "$rc" -ne 0 ] && grep -q "rule 88 has no condition 5" /tmp/err || fail "missing condition: rc $rc $(cat /tmp/err)"
sed 's/^rule = 88/group = 6\nmember = 8799/; /^condition/d; s/^max = 9000/max = 90/; s/^min = 1000/min = 1/; s/^safe = 5000/safe = 5/' /tmp/w.toml >/tmp/bad.toml
qosmgr run -c /tmp/bad.toml --check 2>/tmp/err; rc=$?
[ "$rc" -ne 0 ] && grep -q "port 8799 is not a member of group 6" /tmp/err || fail "not a member: rc $rc $(cat /tmp/err)"
set -e
tcpchains -D -p 88

# Fail-safe: SIGKILL leaves the lease (3 periods = 6 s) to run out; the kernel restores
# the group's rate from before the first leased change.
# (bg: killed when the scenario ends, whatever happens before.)
bg qosmgr run -c /tmp/q.toml --log /tmp/q2.log
m=$!
for i in $(seq 1 100); do
	[ "$(skex -L -j -g 5 | grep -c '"lease_ms"')" -ge 1 ] && break
	sleep 0.1
done
expect_eq "leased while running" "$(skex -L -j -g 5 | grep -c '"lease_ms"')" 1
qosmgr status -c /tmp/q.toml | grep -q "premium" || fail "status: $(qosmgr status -c /tmp/q.toml)"
# Watch mode: one JSON object a line and interval.
w=$(qosmgr status -c /tmp/q.toml -j -w 0.3 -n 3 | grep -c '"name":"premium"')
expect_eq "status watch lines" "$w" 3
kill -9 $m
wait $m 2>/dev/null || true
t0=$(now_ms)
for i in $(seq 1 200); do
	[ "$(skex -L -j -g 5 | grep -c '"lease_ms"')" = 0 ] && break
	sleep 0.1
done
dt=$(($(now_ms) - t0))
expect_eq "lease ran out after SIGKILL" "$(skex -L -j -g 5 | grep -c '"lease_ms"')" 0
expect_eq "fallback rate after SIGKILL" "$(skex -L -j -g 5 | qostest json groups.0.rate)" 9
# The status file was last written with the last renewal: older than 3 periods now.
sleep 1
qosmgr status -c /tmp/q.toml | grep -q "STALE" || fail "status after SIGKILL: $(qosmgr status -c /tmp/q.toml)"
# SIGHUP reloads all or nothing: a broken file is refused and the loop goes on; a good
# one (another set point) replaces it. Then SIGTERM: the safe value at once, no lease.
skex -s 5 -r 10
bg qosmgr run -c /tmp/q.toml --log /tmp/q3.log
m=$!
sleep 3
cp /tmp/q.toml /tmp/q.good
sed -i 's/^min = 1/min = 50/' /tmp/q.toml
kill -HUP $m
sleep 3
grep '"event":"reload refused"' /tmp/q3.log | grep -q 'min must be at least 1 and at most max' ||
	fail "broken reload: $(tail -3 /tmp/q3.log)"
grep -q '"set_point_ms":600' /tmp/q3.log || fail "no step after a refused reload: $(tail -3 /tmp/q3.log)"
sed "s/^set_point = .*/set_point = \"700ms\"/" /tmp/q.good >/tmp/q.toml
kill -HUP $m
sleep 3
grep -q '"event":"reloaded"' /tmp/q3.log || fail "reload: $(tail -3 /tmp/q3.log)"
qosmgr status -j -c /tmp/q.toml | grep -q '"set_point_ms": 700' || fail "status after reload: $(qosmgr status -c /tmp/q.toml)"
cp /tmp/q.good /tmp/q.toml
kill -TERM $m
wait $m || fail "qosmgr exit status after SIGTERM"
expect_eq "safe rate after SIGTERM" "$(skex -L -j -g 5 | qostest json groups.0.rate)" 9
expect_eq "no lease after SIGTERM" "$(skex -L -j -g 5 | grep -c '"lease_ms"')" 0
qosmgr status -j -c /tmp/q.toml | grep -q '"running": false' || fail "status after SIGTERM"
model=$(sed -n 's/.*y(k+1) = \(.*\)   (y.*/\1/p' /tmp/ident.out)
r2=$(sed -n 's/^fit: R^2 \([0-9.-]*\).*/\1/p' /tmp/ident.out)
gains=$(sed -n 's/^gains: //p' /tmp/design.out)
echo "model y(k+1) = $model (R^2 $r2), $gains; held $mean ms for a $SP ms set point ($within of $n periods within +-25 %); SIGKILL: lease ran out in $dt ms; SIGTERM: safe at once"

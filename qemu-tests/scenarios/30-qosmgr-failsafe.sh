# suite-cost: 45 (seconds in the pool on the debug kernel)
# qosmgr's mechanisms, beside other scenarios (29-qosmgr holds the set point, alone):
# the configuration of 29 with gains as qosmgr design gives them there. Bad
# configurations are refused with a message and nothing applied; the other actuators (a
# probabilistic rule's weight; refused, a ratio group member that is not one) are driven
# briefly; qosmgr killed with SIGKILL leaves the basic class throttled only until its
# lease runs out (the kernel restores the group's rate); status live, in watch mode and
# STALE after the kill; SIGHUP reloads all or nothing; SIGTERM restores the safe value
# at once.
SP=600
qosmgr_fixture $SP

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

# Gains as qosmgr design computed them in 29's run (model y(k+1) = 0.38 y(k) + 52 u(k) +
# 46, settling 6 periods, overshoot 0.1).
KP=0.002248 KI=0.012162
printf 'kp = %s\nki = %s\n' "$KP" "$KI" >>/tmp/q.toml
qosmgr run -c /tmp/q.toml --check || fail "the configuration with gains is refused"

# The other actuators: a probabilistic rule's condition weight (and, refused here, a
# ratio group member that is not one). The mechanism only: three periods, every value
# within min..max and logged with its actuator, the safe weight back at the end.
tcpchains -A d -p 88 -o 8701
tcpchains -a d -p 88 -r 8702 -c 5000
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
kp = $KP
ki = $KI
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
# the group's rate from before the first leased change (8 here: neither the safe 9 nor
# anything qosmgr set).
skex -s 5 -r 8
# With the metrics endpoint on (off by default).
sed -i '/^status_file/a metrics_listen = "127.0.0.1:9464"' /tmp/q.toml
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
# The loops' state for Prometheus, published every period.
for i in $(seq 1 50); do
	curl -s http://127.0.0.1:9464/metrics >/tmp/qm.prom && grep -q '^qosmgr_periods_total' /tmp/qm.prom && break
	sleep 0.2
done
grep -q '^qosmgr_loop_set_point_seconds{loop="premium"} 0.6$' /tmp/qm.prom || fail "metrics: $(cat /tmp/qm.prom)"
grep -q '^qosmgr_loop_state{loop="premium",state="' /tmp/qm.prom || fail "metrics: $(cat /tmp/qm.prom)"
expect_eq "not found off /metrics" "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/)" 404
kill -9 $m
wait $m 2>/dev/null || true
t0=$(now_ms)
for i in $(seq 1 200); do
	[ "$(skex -L -j -g 5 | grep -c '"lease_ms"')" = 0 ] && break
	sleep 0.1
done
dt=$(($(now_ms) - t0))
expect_eq "lease ran out after SIGKILL" "$(skex -L -j -g 5 | grep -c '"lease_ms"')" 0
expect_eq "fallback rate after SIGKILL" "$(skex -L -j -g 5 | qostest json groups.0.rate)" 8
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
echo "refusals, share weights in 1000..9000 and restored, metrics endpoint, SIGKILL: lease ran out in $dt ms, status watch and STALE, SIGHUP all or nothing, SIGTERM: safe at once"

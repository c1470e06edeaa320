# suite: solo (holds a delay at a set point: no other load beside it)
# qosmgr closes the loop (the paper's Figure 5 configuration, in small): one server with
# a fixed pool of 2 workers (200 ms a connection: 10 connections/s in all) serves a
# premium port and a basic port; an address rule sends premium clients (10.7.0.1) to
# the first and everyone else to the second; an accept-rate group on the basic port is
# the actuator. Premium clients (4 at once) and basic clients (8 at once) keep the
# server overloaded. The workflow of qosmgr(8): identify a model at this load, design
# the gains by pole placement (checked with b halved and doubled), run: the premium
# class's mean delay settles at the set point. Only the precision part runs here, alone;
# refusals, the other actuators, the fail-safe (SIGKILL, SIGTERM), SIGHUP and status
# are 30-qosmgr-failsafe's, in the pool.
SP=600
qosmgr_fixture $SP
sleep 4

# Identify (24 periods of 2 s, rates 3 and 7), then design.
qosmgr identify -c /tmp/q.toml -l premium --periods 24 --low 3 --high 7 --write >/tmp/ident.out 2>/tmp/ident.err ||
	fail "identify: $(tail -5 /tmp/ident.err) $(cat /tmp/ident.out)"
cat /tmp/ident.out
expect_eq "identify restores the rate" "$(skex -L -j -g 5 | qostest json groups.0.rate)" 10
qosmgr design -c /tmp/q.toml -l premium --settling 6 --overshoot 0.1 --write >/tmp/design.out 2>&1 ||
	fail "design: $(cat /tmp/design.out)"
cat /tmp/design.out
grep -q '^kp = ' /tmp/q.toml || fail "design wrote no gains"

# Run 24 periods (twice the 6-period settling time, then 12 more); the last 12 are judged.
qosmgr run -c /tmp/q.toml --periods 24 --log /tmp/q.log
steps=$(grep -c '"loop":"premium"' /tmp/q.log || true)
[ "$steps" -ge 24 ] || fail "only $steps steps logged"
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

model=$(sed -n 's/.*y(k+1) = \(.*\)   (y.*/\1/p' /tmp/ident.out)
r2=$(sed -n 's/^fit: R^2 \([0-9.-]*\).*/\1/p' /tmp/ident.out)
gains=$(sed -n 's/^gains: //p' /tmp/design.out)
echo "model y(k+1) = $model (R^2 $r2), $gains; held $mean ms for a $SP ms set point ($within of $n periods within +-25 %)"

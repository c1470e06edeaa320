# suite: solo (holds a CPU utilization at a set point: no other load beside it)
# qosmgr's utilization loop (#17, the paper's Figure 10 in small) against real cgroups.
# Two instances of a CPU-bound server, each in a cgroup v2 directory of its own: "full"
# on 8801 burns 100 ms of CPU a connection, "degraded" on 8802 burns 25 ms. A
# probabilistic rule on 88 sends a share of the clients to degraded content (its
# condition's weight: stage 1), and an accept-rate group on 8802 admits them (its rate:
# stage 2). Clients arrive open-loop. The workflow of qosmgr(8): identify a model at
# this load, design the gains by pole placement, run. The loop holds the two cgroups'
# CPU use (cpu.stat usage_usec, over both CPUs) at 25 %:
#  - at 6 clients/s, all on full content, the servers take about 38 %; the loop settles
#    in stage 1 (some clients degraded, the rate untouched);
#  - at 12/s even all-degraded content takes about 32 %: the loop moves through stage 1
#    to its end and then into stage 2 (admission control), in that order;
#  - when the manager stops, both stages are back at their safe values.
if ! [ -e /sys/fs/cgroup/cgroup.controllers ]; then
	echo "SKIP 42-qosmgr-cpu: no cgroup v2 hierarchy (CONFIG_CGROUPS)"
	exit 77
fi
SP=25
CGF=/sys/fs/cgroup/oq42-full
CGD=/sys/fs/cgroup/oq42-degraded
mkdir "$CGF" "$CGD"
teardown() {
	cleanup
	for cg in $CGF $CGD; do
		[ -e $cg/cgroup.kill ] && echo 1 >$cg/cgroup.kill
	done
	sleep 0.2
	rmdir $CGF $CGD 2>/dev/null || true
}
trap teardown EXIT
# in_cg CGROUP CMD...: CMD run inside CGROUP.
in_cg() { sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$@"; }

bg in_cg $CGF qostest pool --port 8801:full --workers 4 --service-ms 0 --cpu-ms 100 >/tmp/pf.log 2>&1
bg in_cg $CGD qostest pool --port 8802:degraded --workers 4 --service-ms 0 --cpu-ms 25 >/tmp/pd.log 2>&1
for i in $(seq 1 100); do grep -q ready /tmp/pf.log && grep -q ready /tmp/pd.log && break; sleep 0.05; done
grep -q ready /tmp/pf.log && grep -q ready /tmp/pd.log || fail "servers: $(cat /tmp/pf.log /tmp/pd.log)"
tcpchains -A d -p 88 -o 8801
tcpchains -a d -p 88 -r 8802 -c 1
skex -N 9 -t rate -r 14
skex -a 9 -p 8802
cat >/tmp/u.toml <<EOF
period = "2s"
lease_periods = 3

[[loop]]
name = "cpu"
type = "utilization"
cgroups = ["$CGF", "$CGD"]
set_point = $SP
stages = [
  { rule = 88, condition = 1, from = 1, to = 10000, safe = 1 },
  { group = 9, from = 14, to = 2, safe = 14 },
]
EOF
# Not designed yet: refused with the reason, nothing applied.
! qosmgr run -c /tmp/u.toml --check >/tmp/check.out 2>&1 || fail "a loop without gains was accepted"
grep -q "no gains" /tmp/check.out || fail "check: $(cat /tmp/check.out)"

bg qostest load --to 127.0.0.1:88 --rate 6 --count 1000000 --concurrency 48 --size 16 --timeout 60
sleep 4

# Identify (16 periods of 2 s, output 0.1 to 0.4: 20 % to 80 % degraded), then design.
qosmgr identify -c /tmp/u.toml -l cpu --periods 16 --low 0.1 --high 0.4 --write >/tmp/ident.out 2>/tmp/ident.err ||
	fail "identify: $(tail -5 /tmp/ident.err) $(cat /tmp/ident.out)"
cat /tmp/ident.out
expect_eq "identify restores the weight" "$(tcpchains -L -j -p 88 | qostest json 0.conditions.0.matcher.weight)" 1
qosmgr design -c /tmp/u.toml -l cpu --settling 5 --overshoot 0.05 --write >/tmp/design.out 2>&1 ||
	fail "design: $(cat /tmp/design.out)"
cat /tmp/design.out
grep -q '^ki = -' /tmp/u.toml || fail "design wrote no (negative) gains: $(cat /tmp/u.toml)"
qosmgr run -c /tmp/u.toml --check >/tmp/check.out 2>&1 || fail "check: $(cat /tmp/check.out)"
# Refused: another condition of the rule leaves stage 1 no room to reach 10000.
tcpchains -a d -p 88 -r 8801 -c 5000
! qosmgr run -c /tmp/u.toml --check >/tmp/check.out 2>&1 || fail "a stage without room accepted"
grep -q "weigh 5000: together more than 10000" /tmp/check.out || fail "no room: $(cat /tmp/check.out)"
tcpchains -d 2 -p 88

# Run: 26 periods at 6/s, then 22 at 12/s.
bg qosmgr run -c /tmp/u.toml --periods 48 --log /tmp/u.log
QPID=${PIDS##* }
for i in $(seq 1 900); do
	k=$(grep -c '"loop":"cpu"' /tmp/u.log 2>/dev/null || true)
	[ "${k:-0}" -ge 26 ] && break
	sleep 0.1
done
bg qostest load --to 127.0.0.1:88 --rate 6 --count 1000000 --concurrency 48 --size 16 --timeout 60
wait "$QPID" || fail "qosmgr run: $(tail -3 /tmp/u.log)"

# One line a period: measured, output, weight, rate.
grep '"loop":"cpu"' /tmp/u.log | grep '"state":"run"' | awk '
	function f(k) { return match($0, "\"" k "\":[-0-9.e]+") ? substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3) : "" }
	{ split($0, v, "\"value\":"); print f("measured"), f("output"), v[2] + 0, v[3] + 0 }' >/tmp/steps
n=$(wc -l </tmp/steps)
[ "$n" -ge 44 ] || fail "only $n periods run: $(tail -3 /tmp/u.log)"
tr '\n' ';' </tmp/steps; echo
# The disturbance a period (identify's residuals, percentage points).
sigma=$(sed -n 's/.*residuals (the disturbance a period) \([0-9.]*\) %.*/\1/p' /tmp/ident.out)
[ -n "$sigma" ] || fail "identify printed no disturbance: $(cat /tmp/ident.out)"
# judge FIRST LAST: mean utilization, its standard deviation and the periods within +-5
# points over steps FIRST..LAST.
judge() {
	sed -n "$1,$2p" /tmp/steps | awk -v sp=$SP '{ s += $1; q += $1 * $1; if ($1 >= sp - 5 && $1 <= sp + 5) k++ }
		# (busybox awk has no sqrt: the Newton iteration)
		function root(x, r, i) { r = x > 1 ? x : 1; for (i = 0; i < 40; i++) r = (r + x / r) / 2; return r }
		END { m = s / NR; v = q / NR - m * m; printf "%.1f %.1f %d %d\n", m, root(v > 0 ? v : 0), k, NR }'
}
# At 6/s the split itself is noisy: 12 connections a period, each full or degraded at
# random (about 3 points a period). Judged over the last 16 periods: the mean within 3
# points, the spread not above twice the disturbance (plus a point).
set -- $(judge 10 25)
m6="$1 % (spread $2)"
echo "6/s: mean $1 %, spread $2 points over the last $4 periods ($3 within +-5 points; disturbance $sigma)"
awk -v m=$1 -v sp=$SP 'BEGIN { exit !(m >= sp - 3 && m <= sp + 3) }' || fail "6/s: mean $1 %, set point $SP %"
awk -v d=$2 -v s=$sigma 'BEGIN { exit !(d <= 2 * s + 1) }' || fail "6/s: spread $2 points for a disturbance of $sigma"
# In stage 1 (the output below 0.5, the rate at its start) in at least 3 of 4 periods:
# the noise may push the output over for a period.
sed -n 10,25p /tmp/steps | awk '$2 < 0.5 && $3 > 1 && $4 == 14 { k++ } END { exit k < NR * 3 / 4 }' ||
	fail "6/s: not settled in stage 1 (weight, rate): $(sed -n 10,25p /tmp/steps | awk '{ print $3, $4 }' | tr '\n' ';')"
set -- $(judge $((n - 11)) $n)
m12="$1 % (spread $2)"
echo "12/s: mean $1 %, spread $2 points over the last $4 periods ($3 within +-5 points)"
awk -v m=$1 -v sp=$SP 'BEGIN { exit !(m >= sp - 2.5 && m <= sp + 2.5) }' || fail "12/s: mean $1 %, set point $SP %"
[ $(($3 * 10)) -ge $(($4 * 7)) ] || fail "12/s: only $3 of $4 periods within +-5 points"
# In order: a rate below its start only with every client degraded.
awk '$4 < 14 && $3 != 10000 { bad++ } END { exit bad > 0 }' /tmp/steps ||
	fail "stage 2 moved before stage 1 ended: $(awk '$4 < 14 { print $3, $4 }' /tmp/steps | tr '\n' ';')"
sed -n "$((n - 11)),${n}p" /tmp/steps | awk '$4 < 14 { k++ } END { exit k < NR / 2 }' ||
	fail "12/s: admission control not used (weight, rate): $(sed -n "$((n - 11)),${n}p" /tmp/steps | awk '{ print $3, $4 }' | tr '\n' ';')"
expect_eq "stopped: weight back to safe" "$(tcpchains -L -j -p 88 | qostest json 0.conditions.0.matcher.weight)" 1
expect_eq "stopped: rate back to safe" "$(skex -L -j -g 9 | qostest json groups.0.rate)" 14

model=$(sed -n 's/.*y(k+1) = \(.*\)   (y.*/\1/p' /tmp/ident.out)
gains=$(sed -n 's/^gains: //p' /tmp/design.out)
echo "model y(k+1) = $model, $gains; held $m6 at 6/s and $m12 at 12/s for $SP %, disturbance $sigma; stage 2 only after stage 1"

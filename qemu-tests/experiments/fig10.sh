# The paper's Figure 10, time compressed (periods of $PERIOD s, default 3, the sampler's
# and qosmgr's):
# a web server's CPU utilization held at 30 % by degrading content first and refusing
# clients only when all of them get degraded content. Two unmodified Apache instances
# serve the same URI, each in a cgroup v2 directory of its own: full content on 8080 (a
# CGI that costs $FULL_ITER loop rounds of CPU) and degraded content on 8081 (the same
# CGI at $DEGRADED_ITER rounds). A probabilistic rule on port 80 sends a share of the
# clients to 8081 (the weight of its condition), an accept-rate group on 8081 admits
# them (its rate). qosmgr's utilization loop drives both in that order (two stages of a
# split range) and reads the two cgroups' cpu.stat. httperf drives the clients
# open-loop at $RATE/s, then at twice that, then at $RATE/s again.
# Phases: uncontrolled (all full content), qosmgr identify and design, then qosmgr
# holding 30 % through the load doubled and halved. One "EXP" CSV line per period:
# the two cgroups' utilization of the 2 CPUs, the share degraded, the degraded
# instance's accept rate limit, the connections each instance accepted, the offered load.
# plot-title: CPU utilization held by qosmgr
PERIOD=${PERIOD:-3}
. /qemu-tests/experiments/web.lib

RATE=${RATE:-24}
SP=${SET_POINT:-30}
FULL_ITER=${FULL_ITER:-2000}
DEGRADED_ITER=${DEGRADED_ITER:-450}
# Above the highest load offered: the accept-rate limit does nothing there.
RATE_MAX=$((2 * RATE + 6))
SETTLING=${SETTLING:-auto}
for c in full:$FULL_ITER degraded:$DEGRADED_ITER; do
	mkdir -p /srv/cgi-${c%%:*}
	sed "s/-lt 2000/-lt ${c##*:}/" /srv/cgi/work >/srv/cgi-${c%%:*}/work
	chmod 755 /srv/cgi-${c%%:*}/work
	mkdir -p /sys/fs/cgroup/web-${c%%:*}
done
CGF=/sys/fs/cgroup/web-full
CGD=/sys/fs/cgroup/web-degraded
apache_on 8080 8 /srv/cgi-full $CGF
# The degraded instance's accept queue is short: a client its rate does not admit is
# refused (the rule finds the queue full) within a few seconds, instead of waiting in a
# queue of 511 that keeps the load of clients long gone (its drain at the rate admitted
# hid the load's halving for 30 s in run 4).
apache_on 8081 8 /srv/cgi-degraded $CGD 64
sleep 1
tcpchains -A d -p 80 -o 8080
tcpchains -a d -p 80 -r 8081 -c 1
skex -N 3 -t rate -r $RATE_MAX -b 2
skex -a 3 -p 8081
cat >/tmp/qosmgr.toml <<CONF
period = "${PERIOD}s"
lease_periods = 3
status_file = "/tmp/qosmgr.status"

[[loop]]
name = "web-cpu"
type = "utilization"
cgroups = ["$CGF", "$CGD"]
set_point = $SP
stages = [
  { rule = 80, condition = 1, from = 1, to = 10000, safe = 1 },
  { group = 3, from = $RATE_MAX, to = 1, safe = $RATE_MAX },
]
CONF
diag cat /tmp/qosmgr.toml

# The sampler: one line per period on a fixed schedule.
usage() { cat $CGF/cpu.stat $CGD/cpu.stat | awk '$1 == "usage_usec" { s += $2 } END { print s }'; }
NCPU=$(grep -c ^processor /proc/cpuinfo)
OFFERED=$RATE
f10_start() {
	renice -n -20 -p $$ >/dev/null
	fi=$(meter_index 8080)
	di=$(meter_index 8081)
	netmeter -j >/tmp/m.json
	last_fa=$(qostest json meters.$fi.accepted </tmp/m.json)
	last_da=$(qostest json meters.$di.accepted </tmp/m.json)
	last_u=$(usage)
	T0=$(now_ms)
	last_t=$T0
	next=$((T0 + PERIOD * 1000))
	echo "EXP t_s,phase,utilization_pct,degraded_share_pct,degraded_rate_limit,full_accepted,degraded_accepted,period_s,offered_per_s"
}
f10_sample() {
	now=$(now_ms)
	w=$((next - now))
	# More than a second behind (design ran between two samples): a new schedule from
	# now, not a burst of short periods to catch up.
	if [ "$w" -lt -1000 ]; then
		next=$((now + PERIOD * 1000))
		w=$((PERIOD * 1000))
	fi
	[ "$w" -gt 0 ] && sleep "$(awk -v w="$w" 'BEGIN { printf "%.3f", w / 1000 }')"
	next=$((next + PERIOD * 1000))
	u=$(usage)
	t_ms=$(now_ms)
	netmeter -j >/tmp/m.json
	fa=$(qostest json meters.$fi.accepted </tmp/m.json)
	da=$(qostest json meters.$di.accepted </tmp/m.json)
	wgt=$(tcpchains -L -j -p 80 | qostest json 0.conditions.0.matcher.weight)
	rate=$(skex -L -j -g 3 | qostest json groups.0.rate)
	awk -v t="$t_ms" -v t0="$T0" -v lt="$last_t" -v ph="$1" -v du=$((u - last_u)) -v n="$NCPU" \
		-v w="$wgt" -v r="$rate" -v fa=$((fa - last_fa)) -v da=$((da - last_da)) -v o="$OFFERED" 'BEGIN {
		d = (t - lt) / 1000;
		printf "EXP %.1f,%s,%.1f,%.1f,%s,%d,%d,%.2f,%s\n", (t - t0) / 1000, ph, du / 1e4 / d / n, w / 100, r, fa, da, d, o }' |
		tee -a /tmp/exp.csv
	last_fa=$fa; last_da=$da; last_u=$u; last_t=$t_ms
}
# load RATE: httperf clients at RATE/s to port 80; their pid in $!.
L1=
web_load() {
	load 80 "$1" client
}

web_load "$RATE"
L1=$!
sleep 4
diag tcpchains -L
diag netmeter
f10_start
# 1. No control: every client gets full content.
for i in $(seq 1 8); do f10_sample uncontrolled; done
# 2. Identify at this load: the output stepped between 0.1 and 0.4 (20 % to 80 % of the
# clients degraded), then design.
qosmgr identify -c /tmp/qosmgr.toml -l web-cpu --periods 20 --low 0.1 --high 0.4 --write \
	>/tmp/ident.out 2>/tmp/ident.err &
I=$!
while kill -0 $I 2>/dev/null; do f10_sample identify; done
wait $I || { echo "FAIL: identify: $(tail -3 /tmp/ident.err)"; exit 1; }
sed 's/^/EXP # /' /tmp/ident.out
# Design computes for seconds (--settling auto simulates every settling time): at the
# lowest priority, not the sampler's highest, or it takes a CPU from the servers and
# leaves them a backlog that the loop's first periods would see as load. Sampled
# meanwhile (the actuators at their safe values).
qosmgr design -c /tmp/qosmgr.toml -l web-cpu --settling "$SETTLING" --overshoot 0 --write >/tmp/design.out 2>&1 &
D=$!
renice -n 19 -p $D >/dev/null
while kill -0 $D 2>/dev/null; do f10_sample design; done
wait $D || { sed 's/^/EXP # /' /tmp/design.out; echo "FAIL: design"; exit 1; }
sed 's/^/EXP # /' /tmp/design.out
TRANSIENT=$(sed -n 's/.* for \([0-9.]*\) periods.*/\1/p' /tmp/design.out | head -n 1 | awk '{ print int($1 + 0.999) }')
# 3. qosmgr holds the set point; the load doubles, then halves.
qosmgr run -c /tmp/qosmgr.toml --log /tmp/qosmgr.log &
M=$!
for i in $(seq 1 25); do f10_sample controlled; done
web_load "$RATE"
L2=$!
OFFERED=$((2 * RATE))
for i in $(seq 1 30); do f10_sample load-x2; done
kill $L2 2>/dev/null || true
OFFERED=$RATE
for i in $(seq 1 25); do f10_sample load-halved; done
kill -TERM $M
wait $M || true
sed 's/^/QOSMGR /' /tmp/qosmgr.log
kill $L1 2>/dev/null || true
echo "EXP # set point $SP %"

# The targets: within +-3 points in at least 85 % of the steady-state periods (after
# the first transient and after each step's settling, which is reported), back within
# 10 periods of each step.
back() { # PHASE: periods after the step until within +-3 points again, counted from the
	# step; a load that shows late (clients of the load just stopped still queued) leaves
	# the band late, so the first period in the band after the first one out of it.
	grep "^EXP [0-9.]*,$1," /tmp/exp.csv | cut -d, -f3 |
		awk -v sp="$SP" -v ph="$1" '{ n++; in_band = $1 >= sp - 3 && $1 <= sp + 3
			if (!in_band && !out) out = n; if (in_band && out && !b) b = n }
			END { if (!out) printf "EXP # %s: never left +-3 points\n", ph
				else printf "EXP # %s: out of +-3 points from period %d, back in period %s\n", ph, out, b ? b : "never (of " n ")" }'
}
report() { # PHASE SKIP
	grep "^EXP [0-9.]*,$1," /tmp/exp.csv | tail -n +$(($2 + 1)) |
		awk -F, -v sp="$SP" -v ph="$1" -v sk="$2" '{ n++; u = $3; if (u >= sp - 3 && u <= sp + 3) k++;
			s += u; sh += $4; a += ($6 + $7) / $8; if (rmin == "" || $5 + 0 < rmin + 0) rmin = $5 }
			END { if (n) printf "EXP # %s, after %d periods: %d periods, utilization mean %.1f %%, %d (%.0f %%) within +-3 points; share degraded mean %.0f %%, lowest rate limit %s/s, admitted %.1f/s\n", ph, sk, n, s / n, k, 100 * k / n, sh / n, rmin, a / n }'
}
report uncontrolled 0
report controlled "$TRANSIENT"
back load-x2
back load-halved
report load-x2 "$TRANSIENT"
report load-halved "$TRANSIENT"
# All steady-state periods together (the target's share).
for ph in controlled load-x2 load-halved; do
	grep "^EXP [0-9.]*,$ph," /tmp/exp.csv | tail -n +$((TRANSIENT + 1))
done | awk -F, -v sp="$SP" '{ n++; if ($3 >= sp - 3 && $3 <= sp + 3) k++ }
	END { printf "EXP # steady state (each phase after %s periods): %d of %d periods (%.0f %%) within +-3 points\n", "'"$TRANSIENT"'", k, n, 100 * k / n }'

# The paper's Figure 6 (with Figure 3's situation as a phase), time compressed: periods
# of 2 s. Two unmodified Apache instances serve a CPU-bound CGI: premium on 8080 with 3
# workers, basic on 8081 with 15 (the basic class is the larger community and, left
# alone, takes most of the CPU). A content rule on port 80 sends requests for
# Host "premium" to 8080 and the rest to 8081; httperf drives premium (6/s: more than
# its instance gets beside an unthrottled basic class, less than it serves alone) and
# basic (40/s) clients open-loop. An accept-rate group on 8081 is qosmgr's actuator; the
# loop holds the premium queue's delay (measure = "queue": waiting over accept rate),
# and the CSV records the premium connections' real mean delay, the target's measure.
# Phases: basic held at 1/s (what premium can get), basic unlimited (no guarantee: the
# premium queue grows), qosmgr identify (a relay around the set point: an open-loop
# queue has no steady state to step between) and design, then qosmgr holding the
# premium delay at 2 s, through a premium load step (+33 %) and a doubling of the basic
# load. One "EXP" CSV line per period (web.lib's sampler).
# plot-title: premium delay held by qosmgr
. /qemu-tests/experiments/web.lib

PREMIUM_RATE=${PREMIUM_RATE:-6}
BASIC_RATE=${BASIC_RATE:-40}
SP=${SET_POINT_MS:-2000}
apache_on 8080 3
apache_on 8081 15
sleep 1
tcpchains -A c -p 80 -o 8081
tcpchains -a c -p 80 -s "Host: premium" -r 8080
skex -N 2 -t rate -r 200 -b 2
skex -a 2 -p 8081
PPORT=8080 BPORT=8081 GROUP=2

load 80 "$PREMIUM_RATE" premium
P1=$!
load 80 "$BASIC_RATE" basic
B1=$!
sleep 4
diag tcpchains -L
diag netmeter
for d in /tmp/apache-*; do diag tail -n 3 "$d/error.log"; done
sampler_start

# 1. Basic held at 1/s: the premium delay the server can give.
skex -s 2 -r 1
for i in $(seq 1 8); do sample basic-at-1; done
# 2. No control: basic unlimited. The premium queue grows (Figure 3's situation, with
# premium on its own instance but no priority). Until its delay passes twice the set
# point, or 25 periods.
skex -s 2 -r 200
for i in $(seq 1 25); do
	sample uncontrolled
	d=$(tail -n 1 /tmp/exp.csv | cut -d, -f3)
	[ -n "$d" ] && [ "${d%.*}" -gt $((2 * SP)) ] && break
done
best=$(phase_median basic-at-1 3)
pr=$(phase_rate uncontrolled 6)
br=$(phase_rate uncontrolled 7)
echo "EXP # premium delay $best ms (median) with basic at 1/s; uncontrolled: premium accepted at $pr/s for $PREMIUM_RATE/s arriving, basic at $br/s"
d=$(tail -n 1 /tmp/exp.csv | cut -d, -f3)
[ -n "$d" ] && [ "${d%.*}" -gt "$SP" ] || {
	echo "FAIL: the premium delay did not pass the set point uncontrolled ($d ms): the server is not overloaded"
	exit 1
}
# The actuator's range: from the floor (1/s) to the rate basic takes when unlimited
# (above it a limit does nothing).
MAX=$(awk -v r="$br" 'BEGIN { m = int(r + 0.5); print (m < 4 ? 4 : m) }')
cat >/tmp/qosmgr.toml <<CONF
period = "${PERIOD}s"
lease_periods = 3
status_file = "/tmp/qosmgr.status"

[[loop]]
name = "premium"
type = "delay"
port = 8080
set_point = "${SP}ms"
measure = "${MEASURE:-queue}"
group = 2
min = 1
max = $MAX
safe = $MAX
slew = $(((MAX + 3) / 4))
min_samples = 3
CONF
diag cat /tmp/qosmgr.toml
# 3. Identify: a relay between a quarter of the range and all of it, around the set
# point (24 periods, sampled alongside), then design (settling in 12 periods, or the
# shortest the model's dead time allows).
skex -s 2 -r "$MAX"
LOW=$(((MAX + 3) / 4))
qosmgr identify -c /tmp/qosmgr.toml -l premium --periods 24 --low "$LOW" --high "$MAX" --relay --write \
	>/tmp/ident.out 2>/tmp/ident.err &
I=$!
while kill -0 $I 2>/dev/null; do sample identify; done
wait $I || { echo "FAIL: identify: $(tail -3 /tmp/ident.err)"; exit 1; }
sed 's/^/EXP # /' /tmp/ident.out
qosmgr design -c /tmp/qosmgr.toml -l premium --settling "${SETTLING:-12}" --overshoot 0.1 --write >/tmp/design.out 2>&1 ||
	{ sed 's/^/EXP # /' /tmp/design.out; echo "FAIL: design"; exit 1; }
sed 's/^/EXP # /' /tmp/design.out
# The first transient: the settling time the design gave, in whole periods.
TRANSIENT=$(sed -n 's/.* for \([0-9.]*\) periods.*/\1/p' /tmp/design.out | head -n 1 |
	awk '{ print int($1 + 0.999) }')
# 4. qosmgr holds the set point; then premium load +33 %; then basic load doubled.
qosmgr run -c /tmp/qosmgr.toml --log /tmp/qosmgr.log &
M=$!
for i in $(seq 1 30); do sample controlled; done
load 80 $((PREMIUM_RATE / 3)) premium
P2=$!
for i in $(seq 1 30); do sample premium+33%; done
load 80 "$BASIC_RATE" basic
B2=$!
for i in $(seq 1 30); do sample basic-x2; done
kill -TERM $M
wait $M || true
kill $P1 $P2 $B1 $B2 2>/dev/null || true
echo "EXP # set point $SP ms"
# The targets: after the first transient (the designed settling time), the
# share of periods with the premium delay within +-10 % (and +-25 %) of the set point;
# after each load step, the periods until it is back within +-10 %; the basic class
# never below its floor (1/s).
report() { # NAME PHASES-REGEX SKIP
	grep "^EXP [0-9.]*,\($2\)," /tmp/exp.csv | cut -d, -f3 | tail -n +$(($3 + 1)) | grep . |
		awk -v sp="$SP" -v ph="$1" -v sk="$3" '{ n++; if ($1 >= 0.9 * sp && $1 <= 1.1 * sp) k++;
			if ($1 >= 0.75 * sp && $1 <= 1.25 * sp) q++; s += $1 }
			END { if (n) printf "EXP # %s, after %d periods: %d measured, mean %.0f ms, %d (%.0f %%) within +-10 %%, %d (%.0f %%) within +-25 %%\n", ph, sk, n, s / n, k, 100 * k / n, q, 100 * q / n }'
}
back() { # PHASE: periods after the step until within +-10 % again
	grep "^EXP [0-9.]*,$1," /tmp/exp.csv | cut -d, -f3 |
		awk -v sp="$SP" -v ph="$1" '{ n++; if ($1 != "" && $1 >= 0.9 * sp && $1 <= 1.1 * sp && !b) b = n }
			END { printf "EXP # %s: within +-10 %% after %s periods\n", ph, b ? b : "more than " n }'
}
# All controlled periods after the first transient, steps included (the issue's target),
# then each phase.
report "all controlled" 'controlled\|premium+33%\|basic-x2' "$TRANSIENT"
report controlled controlled "$TRANSIENT"
report premium+33% 'premium+33%' 0
report basic-x2 basic-x2 0
back premium+33%
back basic-x2
grep "^EXP [0-9.]*,\(controlled\|premium\|basic-x2\)" /tmp/exp.csv | cut -d, -f5 |
	awk '{ if (min == "" || $1 < min) min = $1 } END { printf "EXP # lowest basic rate limit while controlled: %s/s (floor 1/s)\n", min }'

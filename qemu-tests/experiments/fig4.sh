# The paper's Figure 4, time compressed (periods of 2 s): classification and CPU
# priority, no feedback. As in fig6, two unmodified Apache instances (premium on 8080
# with 3 workers, basic on 8081 with 15) and a rule on port 80 that sends Host "premium"
# to 8080 (the paper used an address rule; httperf cannot choose its source address,
# so the rule looks at the Host header, as in fig6); the premium instance runs at a
# higher CPU priority: first none (both at nice 0), then nice -1, then nice -10. The same open-loop load as fig3 and fig6
# (premium 6/s, basic 40/s). The paper's observation: premium's delay falls, but stays
# above the target, because the server as a whole is overloaded. One "EXP" CSV line per
# period (web.lib's sampler).
# plot-title: classification and CPU priority, no feedback
. /qemu-tests/experiments/web.lib

PREMIUM_RATE=${PREMIUM_RATE:-6}
BASIC_RATE=${BASIC_RATE:-40}
apache_on 8080 3
apache_on 8081 15
sleep 1
tcpchains -A c -p 80 -o 8081
tcpchains -a c -p 80 -s "Host: premium" -r 8080
PPORT=8080 BPORT=8081 GROUP=
# nice_premium ADJ: changes the premium instance's priority by ADJ (its workers and the
# CGI processes they fork from then on inherit it).
nice_premium() {
	for p in $(ps -o pid,args | awk '/apache-8080/ && !/awk/ { print $1 }'); do renice -n "$1" -p "$p" >/dev/null; done
}
load 80 "$PREMIUM_RATE" premium
P=$!
load 80 "$BASIC_RATE" basic
B=$!
sleep 2
sampler_start
# Both instances at nice 0 (fig6's uncontrolled phase), then premium at nice -1, then
# at nice -10.
for i in $(seq 1 20); do sample nice0; done
nice_premium -1
diag ps -o pid,nice,args
for i in $(seq 1 30); do sample premium-nice-1; done
nice_premium -9
for i in $(seq 1 30); do sample premium-nice-10; done
kill $P $B 2>/dev/null || true
for ph in nice0 premium-nice-1 premium-nice-10; do
	echo "EXP # $ph: premium delay $(phase_median $ph 3) ms (median), at the end $(grep "^EXP [0-9.]*,$ph," /tmp/exp.csv | tail -n 1 | cut -d, -f3) ms; basic $(phase_median $ph 4) ms; accepted: premium $(phase_rate $ph 6)/s (arriving $PREMIUM_RATE/s), basic $(phase_rate $ph 7)/s"
done

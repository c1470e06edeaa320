# The paper's Figure 3, time compressed (periods of 2 s): no classification. One
# unmodified Apache instance (prefork, 18 workers: as many as fig6's two instances
# together) serves the CPU-bound CGI to everyone; httperf drives the same open-loop load
# as in fig4 and fig6 (premium 6/s, basic 40/s, both by Host header, which nothing here
# looks at). One queue serves both classes, so every client sees the same delay: the
# CSV's two delay columns are that one queue's (the meter on 8080), and the basic rate
# limit column is empty (no group). One "EXP" CSV line per period (web.lib's sampler).
# plot-title: one queue, no classification
. /qemu-tests/experiments/web.lib

PREMIUM_RATE=${PREMIUM_RATE:-6}
BASIC_RATE=${BASIC_RATE:-40}
apache_on 8080 18
sleep 1
netmeter -A 8080
PPORT=8080 BPORT=8080 GROUP=
run_phase 8080 one-queue 45
echo "EXP # one queue for all: median delay $(phase_median one-queue 3) ms over 45 periods; last 15: $(grep '^EXP [0-9.]*,one-queue,' /tmp/exp.csv | tail -n 15 | cut -d, -f3 | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }') ms (median); accepted $(phase_rate one-queue 6)/s"
diag netmeter

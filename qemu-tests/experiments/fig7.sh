# The paper's Figure 7, time compressed (periods of 2 s): one unmodified dovecot IMAP
# server started by xinetd on one port for everyone, no classification. Open-loop IMAP
# sessions (fetch 5 headers and their 3 KB bodies, delete, undelete, log out): premium
# clients (10.1.0.1) and basic ones (10.2.0.1), at the rates fig8 uses. One queue (the
# meter on 143) serves both classes, so every client sees the same delay: the CSV's two
# delay columns are that queue's. One "EXP" CSV line per period (exp.lib's sampler).
# plot-title: IMAP, one queue, no classification
. /qemu-tests/experiments/mail.lib

PREMIUM_RATE=${PREMIUM_RATE:-2}
BASIC_RATE=${BASIC_RATE:-8}
xinetd_on 143
netmeter -A 143
PPORT=143 BPORT=143 GROUP=
run_phase 143 one-queue 45
mail_diag
echo "EXP # one queue for all: median delay $(phase_median one-queue 3) ms over 45 periods; last 15: $(grep '^EXP [0-9.]*,one-queue,' /tmp/exp.csv | tail -n 15 | cut -d, -f3 | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }') ms (median); accepted $(phase_rate one-queue 6)/s"
diag netmeter

# The survey's prioritization, after Voigt et al. (USENIX 2001), with one unmodified
# Apache instance (prefork, 4 workers) serving the CPU-bound CGI of web.lib to three
# classes of clients, told apart by their Host header (class0, class1, everyone else:
# class 2; httperf cannot choose its source address). For each offered load per class
# (httperf, open loop, the same rate for every class, $D s per point), once with one
# FIFO accept queue (the rule sends every class straight to the server) and once with a
# prioritized accept queue (tcpchains -Q 8080: depth 2, cap 256, every class's deadline
# at the clients' 10 s timeout, so that no worker serves a client that gave up). Per
# class: throughput (replies/s over the test) and mean response time of the replies
# (httperf's connection time). One "EXP" CSV line per class and point.
# plot-title: one Apache, three classes: prioritized accept queue (solid) vs one FIFO queue (dashed)
. /qemu-tests/experiments/web.lib

D=${D:-20}
RATES=${RATES:-4 8 12 16 20 24}
apache_on 8080 4
sleep 1
tcpchains -A c -p 80 -o 8080 --prio 2
tcpchains -a c -p 80 -s "Host: class0" -r 8080 --prio 0
tcpchains -a c -p 80 -s "Host: class1" -r 8080 --prio 1
renice -n -20 -p $$ >/dev/null

# settle: waits until the server has nothing queued or held, then 2 s more.
settle() {
	for i in $(seq 1 60); do
		w=$(netmeter -j -p 8080 | qostest json meters.0.waiting)
		h=0
		netmeter -Q -p 8080 >/tmp/q 2>/dev/null && h=$(awk 'NR > 1 { s += $4 } END { print s + 0 }' /tmp/q)
		[ "$w" = 0 ] && [ "$h" = 0 ] && break
		sleep 1
	done
	sleep 2
}

# point MODE RATE: the three classes at RATE connections/s each for D s.
point() {
	for c in 0 1 2; do
		httperf --hog --server 127.0.0.1 --port 80 --uri /cgi/work --rate "$2" \
			--num-conns $(($2 * D)) --timeout 10 --server-name class$c >/tmp/h$c.out 2>&1 &
		renice 0 -p $! >/dev/null
		eval h$c=$!
	done
	wait $h0 $h1 $h2 || true
	for c in 0 1 2; do
		awk -v mode="$1" -v rate="$2" -v c="$c" '
			/^Total: connections/ { for (i = 1; i < NF; i++) { if ($i == "replies") rep = $(i + 1); if ($i == "test-duration") dur = $(i + 1) } }
			/^Connection time \[ms\]: min/ { for (i = 1; i < NF; i++) if ($i == "avg") avg = $(i + 1) }
			/^Errors: total/ { err = $3 }
			END {
				tput = dur > 0 ? rep / dur : 0
				mean = rep > 0 ? avg : ""
				printf "EXP %s,%d,%d,%.2f,%s,%d,%d\n", mode, rate, c, tput, mean, rep, err
			}' /tmp/h$c.out
	done
	settle
}

echo "EXP mode,rate_per_class,class,replies_per_s,mean_ms,replies,errors"
for mode in fifo prio; do
	if [ $mode = prio ]; then
		tcpchains -Q 8080 --classes 3 --depth 2 --cap 256 \
			--deadline 0:10000 --deadline 1:10000 --deadline 2:10000
	fi
	for r in $RATES; do point $mode "$r"; done
	diag netmeter -Q
done
diag netmeter
diag tcpchains -L

# SPDX-License-Identifier: GPL-2.0
# The paper's Table 2, in the VM: connections per second from a client straight to the
# server vs. through a rule with N address or content conditions that never match. All
# configurations are measured in one boot, interleaved round by round, so drift and
# noise spread evenly; each figure is the median of the rounds and is reported as a
# ratio to the direct figure of the same run.
. /qemu-tests/lib.sh
insmod /openqos.ko
ROUNDS=${OQ_BENCH_ROUNDS:-5}
COUNT=${OQ_BENCH_COUNT:-3000}
CONFIGS=${OQ_BENCH_CONFIGS:-"direct a0 a1 a2 a4 a8 a1000 c0 c1 c2 c4 c8 c64 c512"}
serve 8080 srv --mode epoll
# Every client sends a small HTTP header block first (the server skips it), so that all
# configurations carry the same bytes and content rules have something to look at.
HDR='GET /index.html HTTP/1.1\r\nHost: bench.example.org\r\nUser-Agent: qostest\r\n\r\n'
rate() {
	qostest load --to "127.0.0.1:$1" --count "$COUNT" --concurrency 16 --size 16 \
		--header "$HDR" --expect srv | sed -n 's/.* rate=\([0-9]*\).*/\1/p'
}
# setup aN: one address rule on 80 with N conditions for 10.0.0.0/8 addresses (the
# client is 127.0.0.1); cN: a content rule with N host names absent from the header.
setup() {
	tcpchains -F
	n=${1#?}
	case "$1" in a*) tcpchains -A a -p 80 -o 8080 ;; c*) tcpchains -A c -p 80 -o 8080 ;; esac
	i=0
	while [ $i -lt "$n" ]; do
		case "$1" in
		a*) tcpchains -a a -p 80 -i "10.$((i / 256)).$((i % 256)).1" -r 8080 ;;
		c*) tcpchains -a c -p 80 -s "www.host-$i.example.com" -r 8080 ;;
		esac
		i=$((i + 1))
	done
}
for r in $(seq 1 "$ROUNDS"); do
	for c in $CONFIGS; do
		if [ "$c" = direct ]; then
			v=$(rate 8080)
		else
			setup "$c"
			v=$(rate 80)
		fi
		echo "$v" >>"/tmp/bench-$c"
		echo "round $r $c: $v conn/s"
	done
done
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
d=$(median /tmp/bench-direct)
echo "BENCH | configuration | conn/s (median of $ROUNDS) | ratio to direct |"
echo "BENCH | --- | --- | --- |"
for c in $CONFIGS; do
	m=$(median "/tmp/bench-$c")
	ratio=$(awk -v m="$m" -v d="$d" 'BEGIN { printf "%.3f", m / d }')
	case "$c" in
	direct) name="direct to the server" ;;
	a*) name="rule, ${c#a} address conditions" ;;
	c*) name="rule, ${c#c} content conditions" ;;
	esac
	echo "BENCH | $name | $m | $ratio |"
done
tcpchains -F

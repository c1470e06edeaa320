# SPDX-License-Identifier: GPL-2.0
# The paper's Table 2, in the VM: connections per second from a client straight to the
# server vs. through a rule with N address or content conditions that never match. All
# configurations are measured in one boot, interleaved round by round, so drift and
# noise spread evenly; each figure is reported as a ratio to a direct run made just
# before it.
. /qemu-tests/lib.sh
insmod /openqos.ko
ROUNDS=${OQ_BENCH_ROUNDS:-7}
COUNT=${OQ_BENCH_COUNT:-2000}
CONFIGS=${OQ_BENCH_CONFIGS:-"direct m g a0 a0m p a1 a2 a4 a8 a1000 a10000 c0 c1 c2 c4 c8 c64 c512"}
# scripts/run-vm prod bench 'direct,m,g' measures some configurations only.
[ -z "$OQ_FILTER" ] || CONFIGS=$(echo "$OQ_FILTER" | tr , ' ')
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
# Each configuration is one rule set, restored atomically in one request. Rules meter
# their outgoing port; the meter goes again, so that rows measure the classifier alone.
# m: no rule, the server's port metered (the sensors' cost).
# g: no rule, the server's port in an accept-rate and an output group whose limits are
# never reached (the actuators' cost: every accept and send asks a group).
# a0m: a0 with the server's port metered; p: the same, the port prioritized (tcpchains
# -Q, depth 2) and the rule's connections in class 0, never overloaded (a prioritized
# port needs its meter: p against a0m is the queue's own cost).
setup() {
	if [ "$1" = m ]; then
		netmeter -A 8080
		return
	fi
	if [ "$1" = g ]; then
		skex -N 1 -t rate -r 1000000000
		skex -a 1 -p 8080
		skex -N 2 -t output -r 10000000000
		skex -a 2 -p 8080
		return
	fi
	if [ "$1" = a0m ] || [ "$1" = p ]; then
		if [ "$1" = p ]; then
			echo "-Q 8080 --depth 2"
			echo "-A a -p 80 -o 8080 --prio 0"
		else
			echo "-A a -p 80 -o 8080"
		fi >/tmp/bench.rules
		tcpchains --restore /tmp/bench.rules
		return
	fi
	n=${1#?}
	case "$1" in
	a*) echo "-A a -p 80 -o 8080" ;;
	c*) echo "-A c -p 80 -o 8080" ;;
	esac >/tmp/bench.rules
	awk -v n="$n" -v t="$1" 'BEGIN {
		for (i = 0; i < n; i++)
			if (t ~ /^a/) printf "-a a -p 80 -i 10.%d.%d.1 -r 8080\n", i / 256, i % 256
			else printf "-a c -p 80 -s www.host-%d.example.com -r 8080\n", i
	}' >>/tmp/bench.rules
	tcpchains --restore /tmp/bench.rules
	netmeter -D 8080
}
# The port of configuration $1.
port_of() { case "$1" in m | g) echo 8080 ;; *) echo 80 ;; esac; }
# Each configuration is measured right after a direct run, and its figure is the
# median over the rounds of these paired ratios: slow drift of the emulated machine
# cancels out of each pair.
for r in $(seq 1 "$ROUNDS"); do
	for c in $CONFIGS; do
		[ "$c" = direct ] && continue
		tcpchains -F
		tcpchains -X 8080 2>/dev/null || true
		skex -X 1 2>/dev/null || true
		skex -X 2 2>/dev/null || true
		netmeter -D 8080 2>/dev/null || true
		d=$(rate 8080)
		setup "$c"
		v=$(rate "$(port_of "$c")")
		echo "$d" >>/tmp/bench-direct
		echo "$v" >>"/tmp/bench-$c"
		awk -v v="$v" -v d="$d" 'BEGIN { printf "%.4f\n", v / d }' >>"/tmp/bench-ratio-$c"
		echo "round $r $c: $v conn/s, direct $d conn/s"
	done
done
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
range() { sort -n "$1" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo " - " hi }'; }
echo "BENCH | configuration | conn/s (median) | ratio to direct (median of $ROUNDS paired rounds) | range of the paired ratios |"
echo "BENCH | --- | --- | --- | --- |"
echo "BENCH | direct to the server | $(median /tmp/bench-direct) | 1 | |"
for c in $CONFIGS; do
	[ "$c" = direct ] && continue
	case "$c" in
	m) name="direct to the server, its port metered" ;;
	g) name="direct to the server, its port in a rate and an output group (limits never reached)" ;;
	a0m) name="rule, 0 address conditions, the server's port metered" ;;
	p) name="rule, 0 address conditions, to a prioritized port (class 0, no overload)" ;;
	a*) name="rule, ${c#a} address conditions" ;;
	c*) name="rule, ${c#c} content conditions" ;;
	esac
	echo "BENCH | $name | $(median "/tmp/bench-$c") | $(median "/tmp/bench-ratio-$c") | $(range "/tmp/bench-ratio-$c") |"
done
tcpchains -F
tcpchains -X 8080 2>/dev/null || true
skex -X 1 2>/dev/null || true
skex -X 2 2>/dev/null || true
netmeter -D 8080 2>/dev/null || true
# The sensors' cost per connection, without the load generator's threads: one process
# connects, accepts, exchanges 64 bytes each way and closes, in blocks alternating
# between a metered and an unmetered port.
{ sleep 1; netmeter -A 8091; echo go; } | qostest pingpong --port 8091 --base 8092 \
	--blocks "${OQ_BENCH_PP_BLOCKS:-41}" >/tmp/pp.out
pp=$(grep ratio= /tmp/pp.out)
echo "pingpong: $pp"
val() { echo "$pp" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
echo "BENCH "
echo "BENCH | sensors' cost, one connection at a time | microseconds per connection (median) | ratio metered / unmetered (median of paired blocks) | interquartile range of the ratios |"
echo "BENCH | --- | --- | --- | --- |"
echo "BENCH | unmetered port | $(val base_us) | 1 | |"
echo "BENCH | metered port | $(val port_us) | $(val ratio) | $(val iqr) |"

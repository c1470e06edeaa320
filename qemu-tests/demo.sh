# SPDX-License-Identifier: GPL-2.0
# The demo, run inside the VM (see scripts/demo).
set -e
insmod /openqos.ko
ip addr add 128.143.1.10/32 dev lo
ip addr add 10.0.0.10/32 dev lo
for p in 8080 8081; do
	mkdir -p /srv/www$p && echo "lighttpd instance on port $p" >/srv/www$p/index.html
	# upload-dirs: lighttpd's default (/var/tmp) does not exist in the VM, and it says so.
	printf 'server.port = %s\nserver.document-root = "/srv/www%s"\nindex-file.names = ( "index.html" )\nserver.upload-dirs = ( "/tmp" )\n' $p $p >/tmp/l$p.conf
	lighttpd -f /tmp/l$p.conf
done
sleep 0.5
echo "== two unmodified lighttpd instances listen on 8080 (basic) and 8081 (premium)"
echo "== configuring openqos (the paper's syntax):"
for cmd in "tcpchains -A a -p 80 -o 8080" "tcpchains -a a -p 80 -i 128.143.0.0 -m 255.255.0.0 -r 8081"; do
	echo "   # $cmd"; $cmd
done
echo "== clients connect to port 80 only:"
for src in 128.143.1.10 10.0.0.10; do
	for i in 1 2; do
		echo "   client $src -> port 80: $(curl -s --interface $src http://127.0.0.1/)"
	done
done
echo "== rules and counters (tcpchains -L):"
tcpchains -L | sed 's/^/   /'
echo "== the same as JSON (tcpchains -L -j):"
tcpchains -L -j | sed 's/^/   /'
echo "== sensors: both outgoing ports are metered since the rules exist; 40 more clients"
for i in $(seq 1 20); do
	curl -s --interface 128.143.1.10 http://127.0.0.1/ >/dev/null &
	curl -s --interface 10.0.0.10 http://127.0.0.1/ >/dev/null &
done
wait
echo "   # netmeter"
netmeter | sed 's/^/   /'
echo "   # netmeter -p 8081 -i 1 -c 2     (watch: per-interval rates, while clients come)"
(for i in $(seq 1 30); do curl -s --interface 128.143.1.10 http://127.0.0.1/ >/dev/null; done) &
netmeter -p 8081 -i 1 -c 2 | sed 's/^/   /'
wait
echo "== actuators: the basic class (8080) gets 50 KiB/s of output in all (skex)"
head -c 262144 /dev/urandom >/srv/www8080/file.bin
cp /srv/www8080/file.bin /srv/www8081/file.bin
for cmd in "skex -N 1 -t output -r 50K" "skex -a 1 -p 8080"; do
	echo "   # $cmd"; $cmd
done
for src in 10.0.0.10 128.143.1.10; do
	echo "   client $src downloads 256 KiB: $(curl -s --interface $src -o /dev/null \
		-w '%{speed_download} bytes/s' http://127.0.0.1/file.bin)"
done
echo "   # skex -L"
skex -L | sed 's/^/   /'
echo "== and at most 5 accepts/s for the basic class (12 clients at once)"
for cmd in "skex -N 2 -t rate -r 5 -b 1" "skex -a 2 -p 8080"; do
	echo "   # $cmd"; $cmd
done
t0=$(awk '{ print $1 }' /proc/uptime)
for i in $(seq 1 12); do curl -s --interface 10.0.0.10 http://127.0.0.1/ >/dev/null & done
wait
t1=$(awk '{ print $1 }' /proc/uptime)
echo "   12 basic clients served in $(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.1f", b - a }') s"
netmeter -p 8080 | sed 's/^/   /'
echo "== one server for both classes: a prioritized accept queue (tcpchains -Q)"
echo "   (a server that takes 100 ms per connection, one at a time)"
qostest serve --port 8090 --tag slow --accept-delay-ms 100 >/dev/null &
srv=$!
sleep 0.3
for cmd in "tcpchains -Q 8090 --classes 2 --depth 1" "tcpchains -A a -p 90 -o 8090 --prio 1" \
	"tcpchains -a a -p 90 -i 128.143.0.0/16 -r 8090 --prio 0"; do
	echo "   # $cmd"; $cmd
done
qostest load --to 127.0.0.1:90 --from 10.0.0.10 --count 20 --concurrency 20 --expect slow --timeout 30 >/tmp/basic.out &
b=$!
sleep 0.3
premium=$(qostest load --to 127.0.0.1:90 --from 128.143.1.10 --count 5 --concurrency 5 --expect slow --timeout 30)
wait $b
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
echo "   20 basic clients at once, then 5 premium ones: premium served within $(field "$premium" max_ms) ms, basic within $(field "$(cat /tmp/basic.out)" max_ms) ms"
echo "   # netmeter -Q"
netmeter -Q | sed 's/^/   /'
tcpchains -X 8090
kill $srv
skex -X 1
skex -X 2
tcpchains -F
rmmod openqos

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
skex -X 1
skex -X 2
tcpchains -F
rmmod openqos

# SPDX-License-Identifier: GPL-2.0
# The demo, run inside the VM (see scripts/demo).
set -e
insmod /openqos.ko
ip addr add 128.143.1.10/32 dev lo
ip addr add 10.0.0.10/32 dev lo
for p in 8080 8081; do
	mkdir -p /srv/www$p && echo "lighttpd instance on port $p" >/srv/www$p/index.html
	printf 'server.port = %s\nserver.document-root = "/srv/www%s"\nindex-file.names = ( "index.html" )\n' $p $p >/tmp/l$p.conf
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
tcpchains -F
rmmod openqos

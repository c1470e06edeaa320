# SPDX-License-Identifier: GPL-2.0
# Helpers sourced by every scenario (each runs in its own network namespace).
set -e
ip link set lo up
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null
	tcpchains -F 2>/dev/null || true
}
trap cleanup EXIT

# bg CMD...: start a background process, killed when the scenario ends.
bg() {
	"$@" &
	PIDS="$PIDS $!"
}

# serve PORT TAG [qostest serve options]: a tagged test server, waits until it listens.
serve() {
	port=$1; tag=$2; shift 2
	bg qostest serve --port "$port" --tag "$tag" "$@" >/tmp/serve-$port.log 2>&1
	for i in $(seq 1 100); do
		grep -q ready /tmp/serve-$port.log 2>/dev/null && return 0
		sleep 0.05
	done
	echo "server on $port did not start"; cat /tmp/serve-$port.log; return 1
}

# Client classes: addresses on lo (routes for 127/8 and these /32 are local).
add_client_addrs() {
	for a in "$@"; do ip addr add "$a" dev lo; done
}

fail() { echo "FAIL: $*"; exit 1; }

# expect_eq WHAT GOT WANT
expect_eq() { [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; }

# stat_of PORT FIELD: a counter of the rule on PORT from tcpchains -L -j.
stat_of() {
	tcpchains -L -j -p "$1" | tr -d ' \n' | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

# heavy N-PROD N-DEBUG [N-FULL]: a load size for this kernel. The debug kernel (KASAN,
# lockdep, kmemleak) under emulation serves ~20 connections/s, the prod kernel hundreds;
# N-FULL is the scale of the testing bars, run by `scripts/test --full` (prod kernel).
# The debug sizes are what the check needs to exercise the kernel's code paths; the
# statistics of the probabilistic split are proven on the host (rust/src/prob.rs).
heavy() {
	if [ -n "$OQ_FULL" ]; then echo "${3:-$1}"
	elif [ -e /sys/kernel/debug/kmemleak ]; then echo "$2"
	else echo "$1"; fi
}

# tag_count OUTPUT TAG: connections TAG served, from qostest load's tags= field.
tag_count() {
	echo "$1" | tr ' ,' '\n\n' | sed -n "s/^\(tags=\)\{0,1\}$2:\([0-9]*\)\$/\2/p" | grep . || echo 0
}

# cond_hits PORT INDEX: hit counter of condition INDEX of the rule on PORT.
cond_hits() {
	tcpchains -L -p "$1" | awk -v i="$2" '$1 == i { print $NF }'
}

# now_ms: milliseconds since boot (busybox date has no %N).
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# lighttpd_instances PORT...: an unmodified lighttpd per port, each serving "web-PORT".
lighttpd_instances() {
	mkdir -p /var/tmp
	for p in "$@"; do
		mkdir -p /srv/www$p && echo "web-$p" >/srv/www$p/index.html
		cat >/tmp/lighttpd-$p.conf <<-CONF
			server.port = $p
			server.bind = "0.0.0.0"
			server.document-root = "/srv/www$p"
			server.errorlog = "/tmp/lighttpd-$p.err"
			index-file.names = ( "index.html" )
			server.upload-dirs = ( "/tmp" )
		CONF
		bg lighttpd -D -f /tmp/lighttpd-$p.conf
	done
	sleep 0.5
}

# meter_of PORT FIELD: a reading of the meter of PORT (netmeter -j, parsed by serde).
meter_of() {
	netmeter -j -p "$1" | qostest json "meters.0.$2"
}

# load_field OUTPUT FIELD: a field (sent, received, ok...) of qostest load's summary.
load_field() {
	echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# wait_meter PORT FIELD VALUE: waits up to 10 s for a meter reading (closes are
# asynchronous to the client).
wait_meter() {
	for i in $(seq 1 100); do
		[ "$(meter_of "$1" "$2")" = "$3" ] && return 0
		sleep 0.1
	done
	fail "meter $1 $2: got $(meter_of "$1" "$2"), want $3"
}

# vsftpd_on PORT [ipv6]: an unmodified vsftpd serving /srv/ftpPORT anonymously (passive
# mode), on 0.0.0.0:PORT, or with ipv6 on a dual-stack [::]:PORT.
vsftpd_on() {
	mkdir -p /srv/ftp$1
	if [ "$2" = ipv6 ]; then l4=NO; l6=YES; else l4=YES; l6=NO; fi
	cat >/tmp/vsftpd-$1.conf <<-CONF
		listen=$l4
		listen_ipv6=$l6
		listen_port=$1
		background=NO
		anonymous_enable=YES
		local_enable=NO
		anon_root=/srv/ftp$1
		run_as_launching_user=YES
		seccomp_sandbox=NO
		isolate=NO
		isolate_network=NO
		pasv_enable=YES
		connect_from_port_20=NO
		secure_chroot_dir=/var/run/vsftpd/empty
	CONF
	bg vsftpd /tmp/vsftpd-$1.conf
}

# within_pct GOT LOW HIGH OF: LOW% * OF <= GOT <= HIGH% * OF.
within_pct() {
	awk -v g="$1" -v lo="$2" -v hi="$3" -v w="$4" 'BEGIN { exit !(g * 100 >= w * lo && g * 100 <= w * hi) }'
}

# cpu_ticks PID: user + system time of a process, in clock ticks (1/100 s).
cpu_ticks() { awk '{ print $14 + $15 }' /proc/$1/stat; }

# qosmgr_fixture SET_POINT_MS: the Figure 5 configuration in small, for 29 and 30. One
# server (qostest pool: 2 workers, 200 ms a connection) serves premium port 8701 and
# basic port 8702; an address rule on 87 sends 10.7.0.1 to 8701, everyone else to 8702;
# accept-rate group 5 (10/s) on 8702 is the actuator; /tmp/q.toml holds one delay loop
# (no gains); 4 premium and 8 basic clients keep the server overloaded.
qosmgr_fixture() {
	add_client_addrs 10.7.0.1/32
	bg qostest pool --port 8701:premium --port 8702:basic --workers 2 --service-ms 200 >/tmp/pool.log 2>&1
	for i in $(seq 1 100); do [ "$(grep -c ready /tmp/pool.log)" = 2 ] && break; sleep 0.05; done
	[ "$(grep -c ready /tmp/pool.log)" = 2 ] || fail "pool server: $(cat /tmp/pool.log)"
	tcpchains -A a -p 87 -o 8702
	tcpchains -a a -p 87 -i 10.7.0.1/32 -r 8701
	skex -N 5 -t rate -r 10 -b 1
	skex -a 5 -p 8702
	cat >/tmp/q.toml <<EOF
period = "2s"
lease_periods = 3
status_file = "/tmp/qosmgr.status"

[[loop]]
name = "premium"
type = "delay"
port = 8701
set_point = "${1}ms"
group = 5
min = 1
max = 9
safe = 9
slew = 3
min_samples = 4
EOF
	bg qostest load --to 127.0.0.1:87 --from 10.7.0.1 --count 1000000 --concurrency 4 --size 16 --timeout 60
	bg qostest load --to 127.0.0.1:87 --count 1000000 --concurrency 8 --size 16 --timeout 60
}

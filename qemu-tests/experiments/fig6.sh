# The paper's Figures 3 and 6, time compressed (2 s periods): two unmodified Apache
# instances (prefork, 3 workers each, so that waiting happens in the kernel's accept
# queue, where the sensors look) serve a CPU-bound CGI; a content rule on port 80 sends
# requests for Host "premium" to 8080 and the rest to 8081; httperf drives premium and
# basic clients open-loop. Phases: basic held at 1/s (how low the premium delay can go),
# basic unlimited (no guarantee: the two classes share the CPU, Figure 3's situation),
# qosmgr identify and design, then qosmgr holding the premium delay at a set point
# while the basic load doubles halfway (Figure 6). Prints one "EXP" CSV line per
# period: t, phase, premium and basic mean delay (ms), the basic group's rate, the
# connections each class had accepted in the period.
set -e
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
insmod /openqos.ko
ip link set lo up
mkdir -p /srv/www /srv/cgi
echo ok >/srv/www/index.html
cat >/srv/cgi/work <<'EOF'
#!/bin/sh
i=0
while [ $i -lt 2000 ]; do i=$((i + 1)); done
printf 'Content-Type: text/plain\r\n\r\nok\n'
EOF
chmod 755 /srv/cgi/work

apache_on() {
	d=/tmp/apache-$1
	mkdir -p "$d"
	cat >"$d/apache2.conf" <<EOF
ServerRoot /usr/lib/apache2
ServerName localhost
Listen 0.0.0.0:$1
PidFile $d/pid
ErrorLog $d/error.log
DefaultRuntimeDir $d
Mutex file:$d default
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule cgi_module /usr/lib/apache2/modules/mod_cgi.so
User nobody
Group nogroup
StartServers 3
MinSpareServers 3
MaxSpareServers 3
ServerLimit 3
MaxRequestWorkers 3
ListenBacklog 511
KeepAlive Off
Timeout 30
DocumentRoot /srv/www
ScriptAlias /cgi/ /srv/cgi/
<Directory /srv/cgi>
	Require all granted
</Directory>
EOF
	/usr/sbin/apache2 -f "$d/apache2.conf" -k start || { cat "$d/error.log"; exit 1; }
}
apache_on 8080
apache_on 8081
sleep 1

tcpchains -A c -p 80 -o 8081
tcpchains -a c -p 80 -s "Host: premium" -r 8080
skex -N 2 -t rate -r 200 -b 2
skex -a 2 -p 8081

PREMIUM_RATE=${PREMIUM_RATE:-12}
BASIC_RATE=${BASIC_RATE:-40}
load() { # RATE HOST
	httperf --hog --server 127.0.0.1 --port 80 --uri /cgi/work --rate "$1" --num-conns 1000000 \
		--timeout 30 --server-name "$2" >/dev/null 2>&1 &
}
load "$PREMIUM_RATE" premium
P1=$!
load "$BASIC_RATE" basic
B1=$!

# What is running, for the record (and for a run that measures nothing).
sleep 4
diag() { "$@" 2>&1 | sed "s/^/EXP # $1: /"; }
diag ps -o pid,args | grep -E "apache2|httperf" | head -4
diag tcpchains -L
diag netmeter
for d in /tmp/apache-*; do diag tail -n 3 "$d/error.log"; done
T0=$(awk '{ printf "%d", $1 * 1000 }' /proc/uptime)
snap() { netmeter -p "$1" -j | qostest json meters.0.$2; }
last_pa=$(snap 8080 accepted); last_pd=$(snap 8080 delay_ns)
last_ba=$(snap 8081 accepted); last_bd=$(snap 8081 delay_ns)
# sample PHASE: waits one period, then prints its line.
sample() {
	sleep 2
	pa=$(snap 8080 accepted); pd=$(snap 8080 delay_ns)
	ba=$(snap 8081 accepted); bd=$(snap 8081 delay_ns)
	rate=$(skex -L -j -g 2 | qostest json groups.0.rate)
	t=$(awk -v t0="$T0" '{ printf "%.1f", ($1 * 1000 - t0) / 1000 }' /proc/uptime)
	awk -v t="$t" -v ph="$1" -v pa=$((pa - last_pa)) -v pd=$((pd - last_pd)) \
		-v ba=$((ba - last_ba)) -v bd=$((bd - last_bd)) -v r="$rate" 'BEGIN {
		pm = pa > 0 ? sprintf("%.1f", pd / pa / 1e6) : "";
		bm = ba > 0 ? sprintf("%.1f", bd / ba / 1e6) : "";
		printf "EXP %s,%s,%s,%s,%s,%d,%d\n", t, ph, pm, bm, r, pa, ba }' | tee -a /tmp/exp.csv
	last_pa=$pa; last_pd=$pd; last_ba=$ba; last_bd=$bd
}
echo "EXP t_s,phase,premium_delay_ms,basic_delay_ms,basic_rate_limit,premium_accepted,basic_accepted"

# 1. Basic held at 1/s: the premium delay the server can give.
skex -s 2 -r 1
for i in $(seq 1 ${PHASE1:-10}); do sample basic-at-1; done
# 2. No control: basic unlimited (Figure 3's situation: one CPU for both classes).
skex -s 2 -r 200
for i in $(seq 1 15); do sample uncontrolled; done

# median PHASE: the median premium delay of a phase's periods.
median() {
	grep "^EXP [0-9.]*,$1," /tmp/exp.csv | cut -d, -f3 | grep . | sort -n |
		awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'
}
# The set point: a third of the way from what the server can give (basic at 1/s) to what
# it gives uncontrolled.
lo=$(median basic-at-1)
hi=$(median uncontrolled)
SP=$(awk -v lo="$lo" -v hi="$hi" 'BEGIN { printf "%d", lo + (hi - lo) / 3 }')
echo "EXP # premium delay: $lo ms with basic at 1/s, $hi ms uncontrolled; set point $SP ms"
[ "$SP" -gt 0 ] || { echo "FAIL: no usable set point ($lo, $hi)"; exit 1; }
cat >/tmp/qosmgr.toml <<EOF
period = "2s"
lease_periods = 3
status_file = "/tmp/qosmgr.status"

[[loop]]
name = "premium"
type = "delay"
port = 8080
set_point = "${SP}ms"
group = 2
min = 1
max = 60
safe = 60
slew = 6
min_samples = 3
EOF
# 3. Identify at this load (rates 4 and 30, 30 periods), then design.
qosmgr identify -c /tmp/qosmgr.toml -l premium --periods 30 --low 4 --high 30 --write \
	>/tmp/ident.out 2>/tmp/ident.err || { echo "FAIL: identify: $(tail -3 /tmp/ident.err)"; exit 1; }
sed 's/^/EXP # /' /tmp/ident.out
qosmgr design -c /tmp/qosmgr.toml -l premium --settling 8 --overshoot 0.1 --write >/tmp/design.out 2>&1 ||
	{ sed 's/^/EXP # /' /tmp/design.out; echo "FAIL: design"; exit 1; }
sed 's/^/EXP # /' /tmp/design.out
# 4. qosmgr holds the set point; halfway the basic load doubles (a second httperf).
qosmgr run -c /tmp/qosmgr.toml --log /tmp/qosmgr.log &
M=$!
for i in $(seq 1 30); do sample controlled; done
load "$BASIC_RATE" basic
B2=$!
for i in $(seq 1 30); do sample controlled-basic-x2; done
kill -TERM $M
wait $M || true
kill $P1 $B1 $B2 2>/dev/null || true
echo "EXP # set point $SP ms"
# The targets: after the first transient (the first 8 periods), the share of periods with
# the premium delay within +-10 % (and +-25 %) of the set point; after the load step, the
# periods until it is back within +-10 %; the basic class never below its floor (1/s).
for ph in controlled controlled-basic-x2; do
	grep "^EXP [0-9.]*,$ph," /tmp/exp.csv | cut -d, -f3 | tail -n +9 | grep . |
		awk -v sp="$SP" -v ph="$ph" '{ n++; if ($1 >= 0.9 * sp && $1 <= 1.1 * sp) k++;
			if ($1 >= 0.75 * sp && $1 <= 1.25 * sp) q++; s += $1 }
			END { if (n) printf "EXP # %s, periods 9 on: %d measured, mean %.0f ms, %d (%.0f %%) within +-10 %%, %d (%.0f %%) within +-25 %%\n", ph, n, s / n, k, 100 * k / n, q, 100 * q / n }'
done
grep "^EXP [0-9.]*,controlled-basic-x2," /tmp/exp.csv | cut -d, -f3 |
	awk -v sp="$SP" '{ n++; if ($1 != "" && $1 >= 0.9 * sp && $1 <= 1.1 * sp && !b) b = n }
		END { printf "EXP # after the basic load doubled: within +-10 %% again after %s periods\n", b ? b : "more than " n }'
grep "^EXP [0-9.]*,controlled" /tmp/exp.csv | cut -d, -f5 |
	awk '{ if (min == "" || $1 < min) min = $1 } END { printf "EXP # lowest basic rate limit while controlled: %s/s (floor 1/s)\n", min }'

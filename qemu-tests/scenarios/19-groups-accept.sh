# suite: solo (measures rates, bandwidths or delays: no other load beside it)
# Accept-rate and accept-ratio socket groups (skex) against real servers accepting in
# blocking, epoll, poll and select style: the rate held within +-5 % over 10 s with the queue
# kept full, no busy loop in non-blocking servers while the quota is out, a 1:3 ratio on
# two saturated ports within +-5 %, work conservation, live changes, deletion waking a
# blocked accept(), and the errors of skex. Rates of 100 and 1000/s need more load than
# the debug kernel under emulation carries: they run on the prod kernel
# (scripts/run-vm prod test '19*').
echo 65535 >/proc/sys/net/core/somaxconn
ulimit -n 65536

# fill PORT N: N connections queued on PORT (by a background holder, pid in $holder).
fill() {
	qostest hold --to 127.0.0.1:$1 --count $2 --seconds 300 >/dev/null &
	holder=$!
	for i in $(seq 1 1200); do
		got=$(($(meter_of $1 waiting) + $(meter_of $1 accepted)))
		[ "$got" -ge "$2" ] && return 0
		sleep 0.1
	done
	fail "queue of $1 filled to $got of $2"
}

# rate_case MODE RATE PORT: an accept-rate group of RATE/s over a server in MODE with a
# full queue; the accept rate netmeter measures over 10 s is within 5 %.
rate_case() {
	mode=$1; R=$2; port=$3
	serve $port r$R --mode $mode --backlog 65535 --drop
	srv=$!
	# Hold the server back (1/s) while the queue fills, then set the rate under test.
	skex -N $port -t rate -r 1 -b 1
	skex -a $port -p $port
	fill $port $((R * 12 + 50))
	# A burst of a tenth of a second (at least 2: a server woken a little late under
	# emulation does not lose its token), at most +2 % over 10 s.
	b=$((R / 10)); [ $b -ge 2 ] || b=2
	t0=$(cpu_ticks $srv)
	held0=$(skex -L -j -g $port | qostest json groups.0.held)
	skex -s $port -r $R -b $b
	got=$(netmeter -p $port -i 10 -c 1 -j | qostest json ports.0.accepts_per_s)
	cpu=$(($(cpu_ticks $srv) - t0))
	waiting=$(meter_of $port waiting)
	[ "$waiting" -gt 0 ] || fail "rate $R: the queue ran empty (not saturated)"
	within_pct "$got" 95 105 "$R" || fail "rate $R ($mode): measured $got/s"
	held=$(($(skex -L -j -g $port | qostest json groups.0.held) - held0))
	[ "$held" -gt 0 ] || fail "rate $R: nothing was held back"
	echo "rate $R/s ($mode): measured $got/s, server cpu ${cpu} ticks in 10 s, held $held"

	results="$results $R/s($mode)=$got"
	# Deleting the group lets the server take the rest at once.
	skex -X $port
	kill $holder 2>/dev/null || true
	wait $holder 2>/dev/null || true
}

results=""
rate_case blocking 10 8401
# A non-blocking server sleeps in epoll_wait/poll/select while the quota is out: the
# listener is not reported readable, so the server tries accept() about once per
# connection it gets (its last try of each wake-up finds EAGAIN: "held"), not in a
# loop; and it uses far less than the whole CPU a busy loop would (10 s = 1000 ticks;
# the debug kernel costs ~15 ms of system time per accept and close under emulation).
nonblocking() {
	rate_case $1 10 $2
	[ "$held" -le 150 ] || fail "$1 server tried accept() $held times in 10 s at 10/s"
	[ "$cpu" -le 700 ] || fail "$1 server burned $cpu ticks while throttled"
}
nonblocking epoll 8402
nonblocking poll 8403
nonblocking select 8404
if [ -e /sys/kernel/debug/kmemleak ]; then
	echo "SKIP 19-rate-100/s: the debug kernel under emulation serves ~20 connections/s; runs on the prod kernel"
	echo "SKIP 19-rate-1000/s: the debug kernel under emulation serves ~20 connections/s; runs on the prod kernel"
else
	for R in 100 1000; do
		rate_case blocking "$R" $((8400 + R / 100 + 5))
	done
fi

# --- Ratio 1:3 on two saturated ports (blocking and epoll servers). ---
rm -f /tmp/go-ratio
serve 8411 low --drop --backlog 65535 --start-file /tmp/go-ratio
serve 8412 high --drop --backlog 65535 --start-file /tmp/go-ratio --mode epoll
skex -N 11 -t ratio
skex -a 11 -p 8411 -w 1
skex -a 11 -p 8412 -w 3
N=$(heavy 4000 400)
fill 8411 $N
h1=$holder
fill 8412 $N
h2=$holder
touch /tmp/go-ratio
# Snapshot both ports at once while both are still saturated.
for i in $(seq 1 1200); do
	netmeter >/tmp/snap
	hi=$(awk '$1 == 8412 { print $4 }' /tmp/snap)
	[ "$hi" -ge $((N * 3 / 4)) ] && break
	sleep 0.05
done
lo=$(awk '$1 == 8411 { print $4 }' /tmp/snap)
[ "$lo" -gt 0 ] || fail "the low-weight port accepted nothing"
within_pct $((hi * 100 / lo)) 95 105 300 || fail "ratio $hi:$lo, want 3:1"
echo "ratio 1:3: accepted $lo and $hi ($(awk -v a=$hi -v b=$lo 'BEGIN { printf "%.3f", a / b }'))"
# Work-conserving: once the high-weight port has nothing left, the other takes all.
for i in $(seq 1 1200); do
	[ "$(meter_of 8411 accepted)" -ge "$N" ] && break
	sleep 0.1
done
expect_eq "low port drains alone" "$(meter_of 8411 accepted)" "$N"
expect_eq "high port done" "$(meter_of 8412 accepted)" "$N"
kill $h1 $h2 2>/dev/null || true
skex -L -g 11 | grep -q "port  8412  weight     3  accepted $N" || fail "member listing: $(skex -L -g 11)"
skex -s 11 -p 8411 -w 5
skex -L -j -g 11 | qostest json groups.0.members.0.weight | grep -qx 5 || fail "live weight"

# --- Deleting a group wakes a server blocked in accept(). ---
serve 8421 slowacc
skex -N 21 -t rate -r 1 -b 1
skex -a 21 -p 8421
qostest load --to 127.0.0.1:8421 --count 6 --concurrency 6 --timeout 30 --expect slowacc >/tmp/del.out &
l=$!
sleep 2
a=$(meter_of 8421 accepted)
[ "$a" -le 4 ] || fail "rate 1/s accepted $a in 2 s"
sleeping=$(skex -L -j -g 21 | qostest json groups.0.sleeping)
expect_eq "server asleep on the quota" "$sleeping" 1
t0=$(now_ms)
skex -X 21
wait $l || fail "clients after deletion: $(cat /tmp/del.out)"
dt=$(($(now_ms) - t0))
[ "$dt" -lt 3000 ] || fail "accept after deletion took $dt ms"
expect_eq "all accepted after deletion" "$(meter_of 8421 accepted)" 6

# --- Errors. ---
set +e
skex -N 30 -t rate 2>/tmp/err; expect_eq "rate without -r" $? 1
skex -N 30 -t ratio -r 5 2>/tmp/err; expect_eq "ratio with -r" $? 1
grep -q "weights per port" /tmp/err || fail "ratio -r message: $(cat /tmp/err)"
skex -N 30 -t output -r 1000 && skex -N 30 -t rate -r 5 2>/tmp/err; expect_eq "duplicate" $? 1
grep -q "exists" /tmp/err || fail "duplicate message: $(cat /tmp/err)"
skex -a 30 -p 8431 -w 2 2>/tmp/err; expect_eq "weight in output group" $? 1
tcpchains -A a -p 84 -o 8431
skex -a 30 -p 84 2>/tmp/err; expect_eq "rule port" $? 1
grep -q "a rule owns this port" /tmp/err || fail "rule port message: $(cat /tmp/err)"
skex -a 30 -p 8431
skex -a 30 -p 8431 2>/tmp/err; expect_eq "attach twice" $? 1
skex -N 31 -t output -r 1000
skex -a 31 -p 8431 2>/tmp/err; expect_eq "second output group" $? 1
grep -q "another group of this kind" /tmp/err || fail "second group message: $(cat /tmp/err)"
netmeter -D 8431 2>/tmp/err; expect_eq "delete grouped meter" $? 1
grep -q "socket group" /tmp/err || fail "grouped meter message: $(cat /tmp/err)"
skex -d 31 -p 8431 2>/tmp/err; expect_eq "detach non-member" $? 1
skex -X 99 2>/tmp/err; expect_eq "delete missing" $? 1
grep -q "no such socket group" /tmp/err || fail "missing group message: $(cat /tmp/err)"
skex -N 70000 -t ratio 2>/tmp/err; expect_eq "id out of range" $? 1
su -s /bin/sh nobody -c "skex -N 40 -t ratio" 2>/tmp/err; expect_eq "unprivileged" $? 1
grep -q "permitted" /tmp/err || fail "no EPERM: $(cat /tmp/err)"
su -s /bin/sh nobody -c "skex -L" >/dev/null; expect_eq "unprivileged list" $? 0
set -e
expect_eq "meter flags" "$(meter_of 8431 grouped)" true
skex -d 30 -p 8431
expect_eq "meter flags after detach" "$(meter_of 8431 grouped)" false
netmeter -D 8431
skex -X 30
skex -X 31
echo "accept groups:$results, ratio 1:3 = $lo:$hi, deletion wakes accept, errors"

# suite: solo (measures rates, bandwidths or delays: no other load beside it)
# Sensors (netmeter): queueing delay against a server with a known accept delay, bytes
# in both directions against exact transfer sizes (write and sendfile), counters exact
# under 64 concurrent clients and across rule deletion, the oldest waiting connection's
# wait, JSON against the table, watch mode, unprivileged reading.
add_client_addrs 127.0.0.2/32

# --- Delay: the server accepts each connection 200 ms after it is queued. ---
# Tolerance: the delay is measured from the end of the handshake in jiffies (4 ms at
# HZ=250); the server's poll wake-up and scheduling under emulation add a few ms.
serve 8201 slow --accept-delay-ms 200
netmeter -A 8201
expect_eq "requested meter listeners" "$(meter_of 8201 listeners)" 1
qostest load --to 127.0.0.1:8201 --count 10 --expect slow >/dev/null
expect_eq "slow accepted" "$(meter_of 8201 accepted)" 10
mean=$(meter_of 8201 mean_delay_us)
[ "$mean" -ge 195000 ] && [ "$mean" -le 260000 ] || fail "mean delay ${mean}us, want 195-260 ms"
p50=$(meter_of 8201 p50_delay_us)
[ "$p50" -ge 170000 ] && [ "$p50" -le 260000 ] || fail "p50 delay ${p50}us"
sum=$(meter_of 8201 delay_ns)
[ "$sum" -ge 1950000000 ] && [ "$sum" -le 2600000000 ] || fail "delay sum ${sum}ns"
# Through a rule (the outgoing port is metered automatically): 100 ms.
serve 8202 slower --accept-delay-ms 100
tcpchains -A a -p 82 -o 8202
expect_eq "auto meter" "$(meter_of 8202 auto)" true
qostest load --to 127.0.0.1:82 --count 10 --expect slower >/dev/null
expect_eq "rule accepted" "$(meter_of 8202 accepted)" 10
mean=$(meter_of 8202 mean_delay_us)
[ "$mean" -ge 95000 ] && [ "$mean" -le 160000 ] || fail "mean delay via rule ${mean}us"
echo "delay: 200 ms server measured $((sum / 10000000)) ms mean, 100 ms via rule $((mean / 1000)) ms"

# --- Bytes: exact, both directions, write(2) and sendfile(2). ---
serve 8203 writer --send 100000
serve 8204 sender --send 100000 --sendfile
tcpchains -A a -p 83 -o 8203
tcpchains -a a -p 83 -i 127.0.0.2 -m 255.255.255.255 -r 8204
out=$(qostest load --to 127.0.0.1:83 --count 20 --concurrency 4 --size 3000 --recv 100000 --expect writer)
out2=$(qostest load --to 127.0.0.1:83 --from 127.0.0.2 --count 20 --concurrency 4 --size 5000 --recv 100000 --expect sender)
wait_meter 8203 open 0
wait_meter 8204 open 0
expect_eq "write rx" "$(meter_of 8203 rx_bytes)" "$(load_field "$out" sent)"
expect_eq "write tx" "$(meter_of 8203 tx_bytes)" "$(load_field "$out" received)"
expect_eq "sendfile rx" "$(meter_of 8204 rx_bytes)" "$(load_field "$out2" sent)"
expect_eq "sendfile tx" "$(meter_of 8204 tx_bytes)" "$(load_field "$out2" received)"
# Bytes of open connections count too: a slow reader keeps one open while the server
# blocks in send().
serve 8208 big --send 8000000
netmeter -A 8208
qostest load --to 127.0.0.1:8208 --count 1 --size 10 --recv 8000000 --recv-delay-ms 1500 --expect big >/tmp/slow.out &
l=$!
sleep 0.7
expect_eq "open while transferring" "$(meter_of 8208 open)" 1
[ "$(meter_of 8208 tx_bytes)" -gt 0 ] || fail "no bytes of the open connection"
wait $l
wait_meter 8208 open 0
expect_eq "tx of the slow reader" "$(meter_of 8208 tx_bytes)" "$(load_field "$(cat /tmp/slow.out)" received)"

# --- The oldest waiting connection's wait: a server that never accepts. ---
# Two clients 0.5 s apart, read 1 s after the second: the first has waited at least 1 s
# (unless its start took over 0.5 s) and at most as long as since before it started.
serve 8209 idle --no-accept
netmeter -A 8209
expect_eq "oldest, none waiting" "$(meter_of 8209 oldest_ns)" 0
t0=$(now_ms)
qostest load --to 127.0.0.1:8209 --count 1 --timeout 4 >/dev/null 2>&1 &
c1=$!
sleep 0.5
qostest load --to 127.0.0.1:8209 --count 1 --timeout 4 >/dev/null 2>&1 &
c2=$!
sleep 1
netmeter -j -p 8209 >/tmp/oldest.json
t1=$(now_ms)
expect_eq "waiting, never accepted" "$(qostest json meters.0.waiting </tmp/oldest.json)" 2
oldest=$(($(qostest json meters.0.oldest_ns </tmp/oldest.json) / 1000000))
# Above: one jiffy (4 ms) of the stamp's rounding, 10 ms of /proc/uptime's.
[ "$oldest" -ge 1000 ] && [ "$oldest" -le $((t1 - t0 + 14)) ] ||
	fail "oldest ${oldest} ms, want 1,000 to $((t1 - t0 + 14)) ms"
wait $c1 $c2 || true
echo "oldest: $oldest ms waited by the first of 2 unaccepted clients ($((t1 - t0)) ms since before it started)"

# --- 64 concurrent clients, and rule deletion. ---
serve 8205 a --mode epoll
serve 8206 b --mode poll
tcpchains -A a -p 84 -o 8205
tcpchains -a a -p 84 -i 127.0.0.2 -m 255.255.255.255 -r 8206
N=$(heavy 2000 200)
qostest load --to 127.0.0.1:84 --count "$N" --concurrency 64 --timeout 60 --expect a >/tmp/a.out &
l=$!
qostest load --to 127.0.0.1:84 --from 127.0.0.2 --count "$N" --concurrency 64 --timeout 60 --expect b >/tmp/b.out
wait $l
expect_eq "a accepted" "$(meter_of 8205 accepted)" "$(tag_count "$(cat /tmp/a.out)" a)"
expect_eq "b accepted" "$(meter_of 8206 accepted)" "$N"
expect_eq "a accepted all" "$(meter_of 8205 accepted)" "$N"
expect_eq "waiting" "$(meter_of 8205 waiting)" 0
expect_eq "rx exact under load" "$(meter_of 8206 rx_bytes)" "$(load_field "$(cat /tmp/b.out)" sent)"
tcpchains -D -p 84
expect_eq "survives rule deletion" "$(meter_of 8205 accepted)" "$N"
qostest load --to 127.0.0.1:8205 --count 25 --concurrency 8 --expect a >/dev/null
expect_eq "counts direct connections" "$(meter_of 8205 accepted)" $((N + 25))
tcpchains -F
expect_eq "survives flush" "$(meter_of 8206 accepted)" "$N"

# --- JSON matches the table; watch mode; unprivileged reading; deletion. ---
netmeter >/tmp/table
netmeter -j >/tmp/json
n=$(qostest json meters </tmp/json | tr ',' '\n' | grep -c '"port"')
expect_eq "rows" "$(($(wc -l </tmp/table) - 1))" "$n"
i=0
while [ $i -lt "$n" ]; do
	port=$(qostest json meters.$i.port </tmp/json)
	row=$(awk -v p="$port" '$1 == p' /tmp/table)
	set -- $row
	expect_eq "table waiting $port" "$2" "$(qostest json meters.$i.waiting </tmp/json)"
	expect_eq "table accepted $port" "$4" "$(qostest json meters.$i.accepted </tmp/json)"
	expect_eq "table open $port" "$5" "$(qostest json meters.$i.open </tmp/json)"
	expect_eq "table rx $port" "${10}" "$(qostest json meters.$i.rx_bytes </tmp/json)"
	expect_eq "table tx $port" "${11}" "$(qostest json meters.$i.tx_bytes </tmp/json)"
	i=$((i + 1))
done
qostest load --to 127.0.0.1:8205 --count 200 --concurrency 4 >/dev/null &
l=$!
netmeter -p 8205 -i 0.5 -c 3 >/tmp/watch
wait $l
grep -c "8205" /tmp/watch | grep -qx 3 || fail "watch rows: $(cat /tmp/watch)"
awk '$2 == 8205 && $5 > 0' /tmp/watch | grep -q . || fail "watch saw no accepts: $(cat /tmp/watch)"
netmeter -p 8205 -i 0.2 -c 1 -j | qostest json ports.0.port | grep -qx 8205 || fail "watch json"
su -s /bin/sh nobody -c "netmeter -p 8205" | grep -q "^ *8205 " || fail "unprivileged read"
set +e
su -s /bin/sh nobody -c "netmeter -A 8207" 2>/tmp/err; rc=$?
set -e
expect_eq "unprivileged add" $rc 1
grep -q "Operation not permitted\|EPERM\|permitted" /tmp/err || fail "no EPERM: $(cat /tmp/err)"
set +e; netmeter -A 8201 2>/tmp/err; rc=$?; set -e
expect_eq "duplicate meter" $rc 1
grep -q "already metered" /tmp/err || fail "no duplicate message: $(cat /tmp/err)"
netmeter -D 8201
set +e; netmeter -p 8201 2>/tmp/err; rc=$?; set -e
expect_eq "deleted meter" $rc 1
qostest load --to 127.0.0.1:8201 --count 2 --expect slow >/dev/null
echo "sensors: delay, bytes (write+sendfile), $N x2 at 64 concurrent exact, json=table, watch"

# suite: solo (floods the stack with SYNs: no other load beside it)
# SYN flood (testing.md D3) at a rule's port (the module's own listener) and at a
# grouped port (a server's listener with an accept-rate group), from spoofed sources
# (qostest synflood: random addresses of a /16 whose answers go nowhere), so the SYN
# queues fill and the kernel answers with SYN cookies. During the flood real clients
# are counted; after it, both ports serve again within 5 s; no kernel report (the
# suite's scanner), and the kernel's slab memory stays within 64 MB of where it began
# (the module allocates nothing for a handshake that never completes).
ip addr add 10.77.0.1/32 dev lo
# The spoofed sources are routed out of lo, where nothing answers: the SYN-ACKs leave
# (without a route the SYN would be dropped at once) and the requests stay half-open.
ip route add 10.88.0.0/15 dev lo
serve 7702 fl
tcpchains -A a -p 7700 -o 7702
serve 7705 gr --threads 4
skex -N 4 -t rate -r 500
skex -a 4 -p 7705
cookies() { awk '/^TcpExt:/ { if (!n) { for (i = 1; i <= NF; i++) f[$i] = i; n = 1 } else print $f["SyncookiesSent"] }' /proc/net/netstat; }
slab() { awk '/^Slab:/ { print $2 }' /proc/meminfo; }
c0=$(cookies)
s0=$(slab)
S=$(heavy 5 5 30)
qostest synflood --to 10.77.0.1:7700 --from 10.88.0.0/16 --seconds "$S" >/tmp/flood1.out 2>&1 &
f1=$!
qostest synflood --to 10.77.0.1:7705 --from 10.89.0.0/16 --seconds "$S" >/tmp/flood2.out 2>&1 &
f2=$!
sleep 1
# Real clients meanwhile (answered by SYN cookies once the queues are full): counted,
# not required.
during=$(qostest load --to 10.77.0.1:7700 --count 10 --concurrency 2 --timeout 10 --expect fl 2>&1 | tr ' ' '\n' | sed -n 's/^ok=//p')
peak=$(slab)
synrecv=$(netstat -tn 2>/dev/null | grep -c SYN_RECV || true)
wait $f1 || fail "flood 1: $(cat /tmp/flood1.out)"
wait $f2 || fail "flood 2: $(cat /tmp/flood2.out)"
sent=$(($(sed -n 's/.*sent=\([0-9]*\).*/\1/p' /tmp/flood1.out) + $(sed -n 's/.*sent=\([0-9]*\).*/\1/p' /tmp/flood2.out)))
c1=$(cookies)
# The flood filled the SYN queues: the kernel answered with cookies.
[ "$((c1 - c0))" -gt 0 ] || fail "no SYN cookies after $sent SYNs ($synrecv half-open at the peak): the flood did not fill a queue; $(grep -A1 '^Ip:' /proc/net/snmp | tr '\n' ' ') $(grep -A1 '^TcpExt:' /proc/net/netstat | tr '\n' ' ')"
# Service after the flood: both ports, 20 clients each, within 5 s.
t0=$(now_ms)
qostest load --to 10.77.0.1:7700 --count 20 --concurrency 4 --timeout 5 --expect fl >/dev/null || fail "the rule's port after the flood"
qostest load --to 10.77.0.1:7705 --count 20 --concurrency 4 --timeout 5 --expect gr >/dev/null || fail "the grouped port after the flood"
back=$(($(now_ms) - t0))
[ "$back" -le 5000 ] || fail "served again only after ${back} ms"
grow=$(((peak - s0) / 1024))
[ "$grow" -le 64 ] || fail "slab grew by ${grow} MB during the flood"
echo "synflood: $sent SYNs in ${S}s ($(($(cookies) - c0)) answered with cookies), ${during:-0} of 10 clients served during, 40 served ${back} ms after; slab +$((peak - s0)) kB at the peak"

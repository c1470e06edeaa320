# suite: exclusive (unloads and reloads the module)
# Unloading the module with metered servers blocked in accept(), in recv() and in send()
# (a slow reader), and deleting a meter likewise: the blocked calls restart on the
# protocol's own operations, the servers go on serving, transfers stay intact.
serve 8301 idle
serve 8302 bulk --send 8000000
netmeter -A 8301
tcpchains -A a -p 83 -o 8302
# A connection waiting in the server's recv(): opened, nothing sent yet.
qostest hold --to 127.0.0.1:8301 --count 1 --seconds 4 &
h=$!
# A slow reader: the server blocks in send() on 8 MB.
qostest load --to 127.0.0.1:83 --count 1 --size 10 --recv 8000000 --recv-delay-ms 2500 --expect bulk >/tmp/slow.out &
l=$!
sleep 1
expect_eq "metered listeners" "$(meter_of 8301 listeners)" 1
expect_eq "open transfer" "$(meter_of 8302 open)" 1
rmmod openqos || fail "rmmod with blocked callers"
wait $l || fail "transfer across unload: $(cat /tmp/slow.out)"
grep -q "ok=1 " /tmp/slow.out || fail "transfer: $(cat /tmp/slow.out)"
wait $h || true
# The server blocked in accept() serves on.
qostest load --to 127.0.0.1:8301 --count 5 --expect idle >/dev/null || fail "accept after unload"
insmod /openqos.ko
# Meter deletion with a server blocked in accept(): it serves on, unmetered.
netmeter -A 8301
qostest load --to 127.0.0.1:8301 --count 3 --expect idle >/dev/null
expect_eq "accepted before deletion" "$(meter_of 8301 accepted)" 3
netmeter -D 8301
qostest load --to 127.0.0.1:8301 --count 3 --expect idle >/dev/null
netmeter -A 8301
qostest load --to 127.0.0.1:8301 --count 4 --expect idle >/dev/null
expect_eq "a new meter starts at zero" "$(meter_of 8301 accepted)" 4
echo "unload and meter deletion with blocked accept, recv and send: servers unharmed"

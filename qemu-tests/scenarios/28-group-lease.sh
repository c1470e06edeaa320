# suite-cost: 50 (seconds in the pool on the debug kernel)
# Leased group settings (skex -s ID -r RATE --lease D), the fail-safe of a controller:
# when a lease is not renewed the kernel itself puts back the group's setting from
# before the first leased change and wakes whoever the group held back, so a manager
# killed with SIGKILL never leaves a class throttled. Renewals keep the lease (the
# fallback stays the pre-lease setting), a change without a lease ends it, and wrong
# uses are refused with a message.
serve 8601 acc
skex -N 1 -t rate -r 100
skex -a 1 -p 8601
g() { skex -L -j -g 1 | qostest json "groups.0.$1"; }
leased() { skex -L -j -g 1 | grep -c '"lease_ms"' || true; }

# 1. A lease of 1/s for 4 s that nobody renews. 30 clients queue behind it; when it runs
# out the group is back at 100/s and the rest go at once (unexpired, 1/s would take 29 s).
# (One snapshot of the group right after the change: under load, reading it twice can
# take as long as a short lease.)
skex -s 1 -r 1 -b 1 --lease 4s
skex -L -j -g 1 >/tmp/g.json
snap() { qostest json "groups.0.$1" </tmp/g.json; }
expect_eq "leased rate" "$(snap rate)" 1
expect_eq "fallback rate" "$(snap fallback_rate)" 100
left=$(snap lease_ms)
[ "$left" -gt 0 ] && [ "$left" -le 4000 ] || fail "lease left: $left ms"
t0=$(now_ms)
qostest load --to 127.0.0.1:8601 --count 30 --concurrency 30 --timeout 60 --expect acc >/tmp/lease.out ||
	fail "clients behind the lease: $(cat /tmp/lease.out)"
dt=$(($(now_ms) - t0))
[ "$dt" -lt 20000 ] || fail "30 clients took $dt ms: the lease did not run out"
expect_eq "rate after the lease" "$(g rate)" 100
expect_eq "leases expired" "$(g lease_expired)" 1
expect_eq "no lease left" "$(leased)" 0

# 2. Renewed every second (a manager's period), with another rate each time, an 8 s lease
# holds; the fallback stays the setting from before the first leased change.
skex -s 1 -r 2 --lease 8s
for i in 3 4 5 6 7 8 9 10; do
	sleep 1
	skex -s 1 -r "$i" --lease 8s
done
skex -L -j -g 1 >/tmp/g.json
expect_eq "renewed rate" "$(snap rate)" 10
expect_eq "fallback kept" "$(snap fallback_rate)" 100
expect_eq "no expiry while renewed" "$(snap lease_expired)" 1
# Then not renewed: back to 100/s by itself.
for i in $(seq 1 300); do
	[ "$(g lease_expired)" = 2 ] && break
	sleep 0.1
done
expect_eq "expired once renewals stop" "$(g lease_expired)" 2
expect_eq "back to the fallback" "$(g rate)" 100

# 3. A change without a lease is the new setting and ends the lease: nothing is restored
# when the lease would have run out.
skex -s 1 -r 3 --lease 4s
skex -s 1 -r 7
expect_eq "unleased change" "$(g rate)" 7
expect_eq "lease ended" "$(leased)" 0
sleep 6
expect_eq "no restore after an unleased change" "$(g rate)" 7
expect_eq "still two expiries" "$(g lease_expired)" 2

# 4. Refused: a lease on a ratio group, a lease out of range (parser and raw netlink),
# a weight with a lease in one request; nothing changes.
serve 8602 other
skex -N 2 -t ratio
skex -a 2 -p 8602 -w 1
set +e
skex -s 2 --lease 2s 2>/tmp/err; rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "leases are for the rate" /tmp/err || fail "lease on a ratio group: rc $rc, $(cat /tmp/err)"
set +e
skex -s 1 -r 5 --lease 50ms 2>/dev/null; rc=$?
set -e
[ "$rc" -ne 0 ] || fail "a 50 ms lease was accepted"
# The kernel refuses the same for other callers (built from the ABI's constants).
out=$(qostest badreq --phase lease) || fail "raw lease requests: $out"
expect_eq "weight unchanged" "$(skex -L -j -g 2 | qostest json groups.0.members.0.weight)" 1
expect_eq "rate unchanged" "$(g rate)" 7
echo "lease ran out after $dt ms for 30 clients (fallback 100/s restored), 8 renewals held it, an unleased change ended one, 4 wrong uses refused"

# Chains: the outgoing port of one rule is another rule's incoming port (the paper's
# X -> Y -> Z). The connection crosses both rules inside the kernel; each hop counts.
add_client_addrs 127.0.0.2/32 127.0.0.3/32
serve 8080 plain
serve 8081 gold
serve 8082 gold-b
tcpchains -A a -p 80 -o 8080
tcpchains -a a -p 80 -i 127.0.0.2 -m 255.255.255.255 -r 81
tcpchains -A d -p 81 -o 8081
tcpchains -a d -p 81 -r 8082 -c 5000
N=$(heavy 1000 200)
out=$(qostest load --to 127.0.0.1:80 --from 127.0.0.2 --count "$N" --concurrency 16 --expect gold,gold-b)
a=$(tag_count "$out" gold)
b=$(tag_count "$out" gold-b)
expect_eq "gold served" $((a + b)) "$N"
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] || fail "second hop did not split: $out"
qostest load --to 127.0.0.1:80 --from 127.0.0.3 --count 50 --concurrency 8 --expect plain >/dev/null
expect_eq "first hop forwarded" "$(stat_of 80 forwarded)" $((N + 50))
expect_eq "first hop condition" "$(cond_hits 80 1)" "$N"
expect_eq "second hop forwarded" "$(stat_of 81 forwarded)" "$N"
expect_eq "second hop split" "$(cond_hits 81 1)" "$b"
# A cycle is refused with ELOOP, and nothing changes.
set +e; tcpchains -a d -p 81 -r 80 -c 100 2>/tmp/err; rc=$?; set -e
expect_eq "cycle" $rc 1
grep -q "leads back" /tmp/err || fail "no cycle message"
expect_eq "conditions after cycle" "$(tcpchains -L -j -p 81 | grep -c '"out_port"')" 1
# Depth: a chain of 8 rules is fine, a 9th rule in front of it is refused.
for p in 9007 9006 9005 9004 9003 9002 9001 9000; do tcpchains -A a -p $p -o $((p + 1)); done
set +e; tcpchains -A a -p 8999 -o 9000 2>/tmp/err; rc=$?; set -e
expect_eq "chain of 9" $rc 1
grep -q "longer than the limit" /tmp/err || fail "no depth message"
serve 9008 deep
qostest load --to 127.0.0.1:9000 --count 20 --concurrency 4 --expect deep >/dev/null
expect_eq "deepest hop" "$(stat_of 9007 forwarded)" 20
echo "chain 80 -> 81 -> 8081/8082: $a/$b, cycle and depth 9 refused, depth 8 served"

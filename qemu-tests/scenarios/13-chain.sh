# suite-cost: 140 (seconds in the pool on the debug kernel: started early)
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
N=$(heavy 1000 100)
out=$(qostest load --to 127.0.0.1:80 --from 127.0.0.2 --count "$N" --concurrency 16 --expect gold,gold-b --timeout 60)
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

# Chains into content rules. An address rule (82) sends everyone but 127.0.0.3 to a
# content rule (83), which classifies by Host; a content rule (85) sends "GET /shop" to
# the same content rule. A connection's first data may already be queued when it enters
# the content rule (it was sent before the first rule moved the connection): the content
# rule must still see it, at once, not after its data timeout.
serve 8083 c-dflt
serve 8084 c-foo
tcpchains -A c -p 83 -o 8083 --timeout 1500
tcpchains -a c -p 83 -s www.foo.com -r 8084
tcpchains -A a -p 82 -o 83
tcpchains -a a -p 82 -i 127.0.0.3 -m 255.255.255.255 -r 8080
tcpchains -A c -p 85 -o 8080
tcpchains -a c -p 85 -s "GET /shop" -r 83
req() { printf 'GET /%s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n' "$1" "$2"; }
cload() {
	qostest load --size 32 "$@" >/tmp/cload.out || { cat /tmp/cload.out; fail "load $*"; }
	cat /tmp/cload.out
}
M=$(heavy 400 40)
t0=$(now_ms)
cload --to 127.0.0.1:82 --from 127.0.0.2 --count "$M" --concurrency 16 \
	--header "$(req index www.foo.com)" --expect c-foo >/dev/null
cload --to 127.0.0.1:82 --from 127.0.0.2 --count "$M" --concurrency 16 \
	--header "$(req index www.bar.com)" --expect c-dflt >/dev/null
ms=$(($(now_ms) - t0))
expect_eq "address hop into content" "$(stat_of 82 default_hits)" $((2 * M))
expect_eq "content hop after address" "$(cond_hits 83 1)" "$M"
expect_eq "content default after address" "$(stat_of 83 default_hits)" "$M"
# The unmatched requests end with an empty line: decided at once, none timed out.
expect_eq "none timed out" "$(stat_of 83 timed_out)" 0
# The first byte alone, the rest after the connection has crossed the first rule.
cload --to 127.0.0.1:82 --from 127.0.0.2 --header "$(req index www.foo.com)" \
	--split 1 --pause-ms 300 --count 4 --concurrency 2 --expect c-foo >/dev/null
# The excluded address still leaves at the first hop.
cload --to 127.0.0.1:82 --from 127.0.0.3 --count 5 --expect plain >/dev/null
# Content into content: the same data is judged by both rules.
cload --to 127.0.0.1:85 --count "$M" --concurrency 16 \
	--header "$(req shop www.foo.com)" --expect c-foo >/dev/null
cload --to 127.0.0.1:85 --count 20 --concurrency 4 \
	--header "$(req shop www.baz.com)" --expect c-dflt >/dev/null
cload --to 127.0.0.1:85 --count 20 --concurrency 4 \
	--header "$(req index www.foo.com)" --expect plain >/dev/null
expect_eq "content hop into content" "$(cond_hits 85 1)" $((M + 20))
expect_eq "second content hop" "$(cond_hits 83 1)" $((2 * M + 4))
# A silent client crosses the address rule and times out in the content rule.
cload --to 127.0.0.1:82 --from 127.0.0.2 --header "$(req index www.foo.com)" \
	--split 0 --pause-ms 2500 --expect c-dflt >/dev/null
expect_eq "timed out after a hop" "$(stat_of 83 timed_out)" 1
echo "chains into content rules: $((3 * M + 50)) connections through 82 -> 83 and 85 -> 83 in order, $((2 * M)) in $ms ms"

# No listener on the outgoing port: the client gets a prompt reset, the refusal is
# counted, and connections to other ports of the rule are unaffected.
add_client_addrs 10.5.0.1/32
serve 7402 alive
tcpchains -A a -p 7400 -o 7402
tcpchains -a a -p 7400 -i 10.5.0.0/16 -r 7401
out=$(qostest load --to 127.0.0.1:7400 --from 10.5.0.1 --count 20 --concurrency 4 --expect-refused --timeout 5)
echo "$out"
ms=$(echo "$out" | sed -n 's/.*max_refusal_ms=\([0-9]*\).*/\1/p')
[ "$ms" -lt 2000 ] || fail "refusal took ${ms}ms"
expect_eq no-listener "$(stat_of 7400 no_listener)" 20
qostest load --to 127.0.0.1:7400 --count 20 --concurrency 4 --expect alive
expect_eq waiting "$(stat_of 7400 waiting)" 0

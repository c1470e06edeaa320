# Rules are per network namespace: another namespace neither sees nor is affected by
# them, and deleting a namespace with rules and traffic is clean.
serve 7802 srv
tcpchains -A a -p 7800 -o 7802
unshare -n sh -c 'ip link set lo up; [ -z "$(tcpchains -L)" ] && tcpchains -A a -p 7800 -o 7802 && tcpchains -L | grep -q "^rule 7800"' || fail "isolation"
expect_eq "rules here" "$(tcpchains -L | grep -c '^rule')" 1
# A namespace that dies with a rule and connections in flight.
unshare -n sh -c 'ip link set lo up; qostest serve --port 7902 --tag x >/dev/null & sleep 0.3; tcpchains -A a -p 7900 -o 7902; qostest load --to 127.0.0.1:7900 --count 200 --concurrency 8 >/dev/null 2>&1 & sleep 0.5; kill %1'
qostest load --to 127.0.0.1:7800 --count 20 --expect srv
echo "namespaces isolated"

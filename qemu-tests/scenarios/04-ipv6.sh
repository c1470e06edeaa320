# suite-cost: 55 (seconds in the pool on the debug kernel: started early)
# IPv6 clients reach IPv6 targets; IPv4 clients reach IPv4 targets (default mode).
# With --dual-stack, IPv4 clients arrive v4-mapped and reach dual-stack [::] targets.
ip addr add 2001:db8:1::1/128 dev lo
ip addr add 2001:db8:2::1/128 dev lo
sleep 2 # duplicate address detection
serve 7101 v6-prem --addr ::v6only
serve 7102 v6-basic --addr ::v6only
serve 7103 v4-basic --addr 0.0.0.0
tcpchains -A a -p 7100 -o 7102
tcpchains -a a -p 7100 -i 2001:db8:1::/48 -r 7101
qostest load --to '[::1]:7100' --from 2001:db8:1::1 --count 50 --concurrency 4 --expect v6-prem
qostest load --to '[::1]:7100' --from 2001:db8:2::1 --count 50 --concurrency 4 --expect v6-basic
# An IPv4 client on the same rule goes to the IPv4 listener of the default port? No: the
# default port 7102 has only a v6only listener, so the IPv4 connection is refused, counted.
qostest load --to 127.0.0.1:7100 --count 3 --expect-refused --timeout 5
expect_eq no-listener "$(stat_of 7100 no_listener)" 3
tcpchains -D -p 7100

# Dual stack: one [::] listener in the module, servers on dual-stack [::].
serve 7201 ds-prem --addr ::
serve 7202 ds-basic --addr ::
add_client_addrs 10.7.0.1/32
tcpchains -A a -p 7200 -o 7202 --dual-stack
tcpchains -a a -p 7200 -i 10.7.0.0 -m 255.255.0.0 -r 7201
qostest load --to 127.0.0.1:7200 --from 10.7.0.1 --count 50 --concurrency 4 --expect ds-prem
qostest load --to 127.0.0.1:7200 --count 50 --concurrency 4 --expect ds-basic
qostest load --to '[::1]:7200' --count 50 --concurrency 4 --expect ds-basic
expect_eq forwarded "$(stat_of 7200 forwarded)" 150
# A dual-stack target without --dual-stack: IPv4 clients cannot be moved there.
tcpchains -A a -p 7300 -o 7202
qostest load --to 127.0.0.1:7300 --count 2 --expect-refused --timeout 5
expect_eq family "$(stat_of 7300 family_mismatch)" 2

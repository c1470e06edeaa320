# Targets that accept with a blocking accept(), epoll and poll all wake for every
# moved connection (the move calls the target's sk_data_ready).
add_client_addrs 10.0.1.1/32 10.0.2.1/32
N=$(heavy 200 100)
serve 7001 blocking --mode blocking
serve 7002 epoll --mode epoll
serve 7003 poll --mode poll
tcpchains -A a -p 7000 -o 7003
tcpchains -a a -p 7000 -i 10.0.1.0 -m 255.255.255.0 -r 7001
tcpchains -a a -p 7000 -i 10.0.2.0/24 -r 7002
qostest load --to 127.0.0.1:7000 --from 10.0.1.1 --count $N --concurrency 8 --expect blocking --timeout 30
qostest load --to 127.0.0.1:7000 --from 10.0.2.1 --count $N --concurrency 8 --expect epoll --timeout 30
qostest load --to 127.0.0.1:7000 --from 127.0.0.1 --count $N --concurrency 8 --expect poll --timeout 30
expect_eq forwarded "$(stat_of 7000 forwarded)" $((3 * N))

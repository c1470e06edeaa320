# 5,000 connections at concurrency 64, two classes, every connection checked: the
# expected instance, the client's real address and port, and a payload hash. Under
# emulation the debug kernel queues 64 connections for seconds each: the per-connection
# timeout is 60 s (a hang still fails), not the 10 s default.
add_client_addrs 10.8.0.1/32
serve 7601 premium --mode epoll
serve 7602 basic --mode epoll
tcpchains -A a -p 7600 -o 7602
tcpchains -a a -p 7600 -i 10.8.0.0/16 -r 7601
qostest load --to 127.0.0.1:7600 --from 10.8.0.1 --count 2500 --concurrency 32 --expect premium --size 2048 --timeout 60 &
a=$!
qostest load --to 127.0.0.1:7600 --count 2500 --concurrency 32 --expect basic --size 2048 --timeout 60
wait $a
expect_eq forwarded "$(stat_of 7600 forwarded)" 5000
expect_eq refused "$(stat_of 7600 no_listener)$(stat_of 7600 queue_full)$(stat_of 7600 other_refused)" 000
echo "5000 connections verified"

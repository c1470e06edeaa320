# suite-cost: 65 (seconds in the pool on the debug kernel: started early)
# Connections at concurrency 64, two classes, every connection checked: the expected
# instance, the client's real address and port, and a payload hash. 5,000 on the prod
# kernel, 600 on the debug kernel (the same paths, at 64 concurrent), and with
# `scripts/test --full` 20,000 in each of IPv4, IPv6 and v4-mapped IPv6 (the bar C1).
# Under emulation the debug kernel queues 64 connections for seconds each: the
# per-connection timeout is 60 s (a hang still fails), not the 10 s default.
add_client_addrs 10.8.0.1/32
ip addr add 2001:db8:8::1/128 dev lo
N=$(heavy 2500 300 10000)
serve 7601 premium --mode epoll
serve 7602 basic --mode epoll
tcpchains -A a -p 7600 -o 7602
tcpchains -a a -p 7600 -i 10.8.0.0/16 -r 7601
qostest load --to 127.0.0.1:7600 --from 10.8.0.1 --count "$N" --concurrency 32 --expect premium --size 2048 --timeout 60 &
a=$!
qostest load --to 127.0.0.1:7600 --count "$N" --concurrency 32 --expect basic --size 2048 --timeout 60
wait $a
expect_eq forwarded "$(stat_of 7600 forwarded)" $((2 * N))
expect_eq refused "$(stat_of 7600 no_listener)$(stat_of 7600 queue_full)$(stat_of 7600 other_refused)" 000
if [ -n "$OQ_FULL" ]; then
	# IPv6 (v6only listeners) and v4-mapped IPv6 (a dual-stack rule and servers).
	sleep 2 # duplicate address detection
	serve 7611 v6-premium --mode epoll --addr ::v6only
	serve 7612 v6-basic --mode epoll --addr ::v6only
	tcpchains -A a -p 7610 -o 7612
	tcpchains -a a -p 7610 -i 2001:db8:8::/48 -r 7611
	qostest load --to '[::1]:7610' --from 2001:db8:8::1 --count "$N" --concurrency 32 --expect v6-premium --size 2048 --timeout 60 &
	a=$!
	qostest load --to '[::1]:7610' --count "$N" --concurrency 32 --expect v6-basic --size 2048 --timeout 60
	wait $a
	expect_eq "forwarded v6" "$(stat_of 7610 forwarded)" $((2 * N))
	serve 7621 mapped-premium --mode epoll --addr ::
	serve 7622 mapped-basic --mode epoll --addr ::
	tcpchains -A a -p 7620 -o 7622 --dual-stack
	tcpchains -a a -p 7620 -i 10.8.0.0 -m 255.255.0.0 -r 7621
	qostest load --to 127.0.0.1:7620 --from 10.8.0.1 --count "$N" --concurrency 32 --expect mapped-premium --size 2048 --timeout 60 &
	a=$!
	qostest load --to 127.0.0.1:7620 --count "$N" --concurrency 32 --expect mapped-basic --size 2048 --timeout 60
	wait $a
	expect_eq "forwarded v4-mapped" "$(stat_of 7620 forwarded)" $((2 * N))
	echo "$((2 * N)) connections verified in each of IPv4, IPv6 and v4-mapped IPv6"
else
	echo "$((2 * N)) connections verified"
fi

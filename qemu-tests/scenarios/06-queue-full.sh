# A target that never accepts, listen(fd, 4): exactly 5 connections land in its queue
# (sk_acceptq_is_full is backlog > max); the rest are reset and counted as queue-full.
serve 7502 never --backlog 4 --no-accept
tcpchains -A a -p 7500 -o 7502
qostest load --to 127.0.0.1:7500 --count 12 --concurrency 12 --timeout 3 --expect-refused >/tmp/full.out || true
cat /tmp/full.out
expect_eq forwarded "$(stat_of 7500 forwarded)" 5
expect_eq queue-full "$(stat_of 7500 queue_full)" 7
# Deleting the rule and closing the full target (cleanup) must not WARN.
tcpchains -D -p 7500

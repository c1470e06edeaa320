# suite-cost: 120 (seconds in the pool on the debug kernel: started early)
# The paper's probabilistic rule verbatim: 30% of the connections to 8081, the rest to
# the default port; the split within 4 sigma (10,000 connections on the prod kernel; on
# the debug kernel 200 only show that the kernel draws: the statistics over millions of
# draws, and the exact count over every draw, are host tests of rust/src/prob.rs);
# weights changed under load lose nothing.
N=$(heavy 10000 ${OQ_PROB_N:-200})
serve 8080 default
serve 8081 thirty
serve 8082 other
tcpchains -A d -p 80 -o 8080
tcpchains -a d -p 80 -r 8081 -c 3000
out=$(qostest load --to 127.0.0.1:80 --count "$N" --concurrency 32 --size 16 --expect default,thirty --timeout 60)
k=$(tag_count "$out" thirty)
d=$(tag_count "$out" default)
expect_eq "all served" $((k + d)) "$N"
# |k - 0.3 N| <= 4 sqrt(0.21 N), compared squared in integers: (10k - 3N)^2 <= 16*21*N.
dev=$((10 * k - 3 * N))
[ $((dev * dev)) -le $((16 * 21 * N)) ] || fail "30% split: $k of $N"
expect_eq "condition hits" "$(cond_hits 80 1)" "$k"
expect_eq "default hits" "$(stat_of 80 default_hits)" "$d"
# Over 10000 in total is refused, and the rule is unchanged.
set +e; tcpchains -a d -p 80 -r 8082 -c 7001 2>/tmp/err; rc=$?; set -e
expect_eq "weights over 10000" $rc 2
grep -q "more than 10000" /tmp/err || fail "no message for weights over 10000"
set +e; tcpchains -a d -p 80 -r 8082 -c 10001 2>/dev/null; rc=$?; set -e
expect_eq "weight 10001" $rc 2
tcpchains -a d -p 80 -r 8082 -c 7000
# Change the weights 200 times (40 on the debug kernel: 20 rounds of 2) while connections flow: every connection is served by
# one of the three servers and counted exactly once.
M=$(heavy 2000 100)
before=$(stat_of 80 forwarded)
bg sh -c "qostest load --to 127.0.0.1:80 --count $M --concurrency 16 --size 16 --timeout 60 \
	--expect default,thirty,other >/tmp/prob-load.out 2>&1; echo \$? >/tmp/prob-load.rc"
W=$(heavy 100 20)
for i in $(seq 1 "$W"); do
	tcpchains -a d -p 80 -r 8081 -c $((i * 3000 / W)) -R 1
	tcpchains -a d -p 80 -r 8082 -c $((7000 - i * 3000 / W)) -R 2
done
for i in $(seq 1 600); do [ -e /tmp/prob-load.rc ] && break; sleep 0.5; done
cat /tmp/prob-load.out
expect_eq "load under weight changes" "$(cat /tmp/prob-load.rc)" 0
expect_eq "forwarded during changes" $(($(stat_of 80 forwarded) - before)) "$M"
echo "30% split: $k of $N (4 sigma), $M connections intact across $((2 * W)) weight changes"

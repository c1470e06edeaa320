# suite-cost: 90 (seconds in the pool on the debug kernel: started early)
# 10,000 condition changes (add, replace, delete; 1,500 on the debug kernel, 100,000
# with --full) on one rule while clients go through two untouched rules, an address
# rule and a content rule: every one of those connections reaches its expected server.
serve 9081 addr
serve 9082 host
serve 9089 churned
tcpchains -A a -p 80 -o 9089
tcpchains -a a -p 80 -i 127.0.0.0/8 -r 9081
tcpchains -A c -p 81 -o 9089
tcpchains -a c -p 81 -s www.foo.com -r 9082
tcpchains -A a -p 82 -o 9089
N=$(heavy 2000 120 20000)
# (add, replace, delete in turn: a count of 3n + 1 leaves one condition)
K=$(heavy 10000 1501 100000)
bg sh -c "qostest load --to 127.0.0.1:80 --count $N --concurrency 8 --size 64 --expect addr \
	>/tmp/a.out 2>&1; echo \$? >/tmp/a.rc"
bg sh -c "qostest load --to 127.0.0.1:81 --count $N --concurrency 8 --size 64 --expect host \
	--header 'GET / HTTP/1.1\\r\\nHost: www.foo.com\\r\\n\\r\\n' >/tmp/c.out 2>&1; echo \$? >/tmp/c.rc"
qostest churn --port 82 --to 9089 --count "$K"
for i in $(seq 1 1200); do [ -e /tmp/a.rc ] && [ -e /tmp/c.rc ] && break; sleep 0.5; done
cat /tmp/a.out /tmp/c.out
expect_eq "address rule under churn" "$(cat /tmp/a.rc)" 0
expect_eq "content rule under churn" "$(cat /tmp/c.rc)" 0
expect_eq "address hits" "$(cond_hits 80 1)" "$N"
expect_eq "content hits" "$(cond_hits 81 1)" "$N"
expect_eq "churned rule" "$(tcpchains -L -p 82 | grep -c ' -> ')" 1
echo "$K changes on one rule; 2 x $N connections through untouched rules all correct"

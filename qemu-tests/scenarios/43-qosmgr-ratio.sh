# suite-cost: 90
# qosmgr's ratio loop (#17 item 4, the survey's relative differentiation): gold clients
# wait a fixed fraction of basic clients' wait, whatever the load. One server (qostest
# pool: 2 workers, 200 ms a connection) serves a gold port and a basic port; an address
# rule on 87 sends 10.7.0.3 to the gold port and everyone else to the basic one; both
# ports are members of an accept-ratio group, and the loop drives the gold port's
# weight. Six gold and six basic clients (closed-loop) keep both queues full, so a
# class's delay is its clients over its share of the accepts: the delay ratio is about
# the inverse of the weight ratio. The workflow of qosmgr(8): identify (PRBS between
# weights 1 and 5), design, run: the ratio of the gold port's mean delay to the basic
# port's settles at 0.4 (a weight of about 2.5, which the quantizer gives as 2 and 3 in
# turn). The plant is the workers' pool, not the CPU: it runs in the pool.
add_client_addrs 10.7.0.3/32
bg qostest pool --port 8721:gold --port 8722:basic --workers 2 --service-ms 200 >/tmp/pool.log 2>&1
for i in $(seq 1 100); do [ "$(grep -c ready /tmp/pool.log)" = 2 ] && break; sleep 0.05; done
[ "$(grep -c ready /tmp/pool.log)" = 2 ] || fail "pool server: $(cat /tmp/pool.log)"
tcpchains -A a -p 87 -o 8722
tcpchains -a a -p 87 -i 10.7.0.3/32 -r 8721
skex -N 7 -t ratio
skex -a 7 -p 8721 -w 1
skex -a 7 -p 8722 -w 1
SP=0.4
cat >/tmp/r.toml <<EOF
period = "2s"
lease_periods = 3

[[loop]]
name = "gold"
type = "ratio"
port = 8721
relative_to = 8722
set_point = $SP
group = 7
member = 8721
min = 1
max = 8
safe = 1
min_samples = 2
EOF
# Refused: the same port twice, a ratio of 0, no gains yet.
sed 's/^relative_to = 8722/relative_to = 8721/' /tmp/r.toml >/tmp/bad.toml
! qosmgr run -c /tmp/bad.toml --check 2>/tmp/err || fail "one port twice accepted"
grep -q "port and relative_to are both 8721" /tmp/err || fail "one port twice: $(cat /tmp/err)"
sed "s/^set_point = $SP/set_point = 0/" /tmp/r.toml >/tmp/bad.toml
! qosmgr run -c /tmp/bad.toml --check 2>/tmp/err || fail "a ratio of 0 accepted"
grep -q "must be above 0" /tmp/err || fail "a ratio of 0: $(cat /tmp/err)"
! qosmgr run -c /tmp/r.toml --check 2>/tmp/err || fail "a loop without gains accepted"
grep -q "no gains" /tmp/err || fail "no gains: $(cat /tmp/err)"
# Identify refuses an actuator that works on neither port.
skex -N 8 -t ratio
skex -a 8 -p 8723 -w 1
sed 's/^group = 7/group = 8/; s/^member = 8721/member = 8723/' /tmp/r.toml >/tmp/bad.toml
! qosmgr identify -c /tmp/bad.toml -l gold --periods 12 >/tmp/out 2>/tmp/err || fail "an actuator on neither port identified"
grep -q "works on both ports 8721 and 8722 or on neither" /tmp/err || fail "neither port: $(cat /tmp/err)"
skex -X 8

bg qostest load --to 127.0.0.1:87 --from 10.7.0.3 --count 1000000 --concurrency 6 --size 16 --timeout 60
bg qostest load --to 127.0.0.1:87 --count 1000000 --concurrency 6 --size 16 --timeout 60
sleep 4

qosmgr identify -c /tmp/r.toml -l gold --periods 16 --low 1 --high 5 --write >/tmp/ident.out 2>/tmp/ident.err ||
	fail "identify: $(tail -5 /tmp/ident.err) $(cat /tmp/ident.out)"
cat /tmp/ident.out
expect_eq "identify restores the weight" "$(skex -L -j -g 7 | qostest json groups.0.members.0.weight)" 1
qosmgr design -c /tmp/r.toml -l gold --settling 6 --overshoot 0.1 --write >/tmp/design.out 2>&1 ||
	fail "design: $(cat /tmp/design.out)"
cat /tmp/design.out
qosmgr run -c /tmp/r.toml --check >/tmp/check.out 2>&1 || fail "check: $(cat /tmp/check.out)"

# Run 22 periods; the last 10 are judged.
qosmgr run -c /tmp/r.toml --periods 22 --log /tmp/r.log
grep '"loop":"gold"' /tmp/r.log | grep '"state":"run"' | awk '
	function f(k) { return match($0, "\"" k "\":[-0-9.e]+") ? substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3) : "" }
	{ print f("measured"), f("value") }' >/tmp/steps
n=$(wc -l </tmp/steps)
[ "$n" -ge 15 ] || fail "only $n periods run: $(tail -3 /tmp/r.log)"
tr '\n' ';' </tmp/steps; echo
set -- $(tail -n 10 /tmp/steps | awk -v sp=$SP '{ s += $1; w += $2; if ($1 >= sp * 0.75 && $1 <= sp * 1.25) k++ }
	END { printf "%.3f %.2f %d %d\n", s / NR, w / NR, k, NR }')
echo "ratio over the last $4 periods: mean $1 (set point $SP), weight $2, $3 within +-25 %"
awk -v m=$1 -v sp=$SP 'BEGIN { exit !(m >= sp * 0.8 && m <= sp * 1.2) }' || fail "mean ratio $1, set point $SP"
[ $(($3 * 10)) -ge $(($4 * 6)) ] || fail "only $3 of $4 periods within +-25 % of the set point"
expect_eq "stopped: safe weight back" "$(skex -L -j -g 7 | qostest json groups.0.members.0.weight)" 1
model=$(sed -n 's/.*y(k+1) = \(.*\)   (y.*/\1/p' /tmp/ident.out)
gains=$(sed -n 's/^gains: //p' /tmp/design.out)
echo "model y(k+1) = $model, $gains; held a delay ratio of $1 for $SP (gold weight $2 against 1), $3 of $4 periods within +-25 %"

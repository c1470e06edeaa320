# suite: exclusive (unloads and reloads the module)
# Bad input gets a clear message and a distinct exit code; nothing is half-created.
run() { set +e; "$@" 2>/tmp/err; rc=$?; set -e; cat /tmp/err; }
run tcpchains -A a -p 0 -o 1021;          expect_eq "port 0" $rc 2
run tcpchains -A a -p 65536 -o 1021;      expect_eq "port 65536" $rc 2
run tcpchains -A x -p 21 -o 1021;         expect_eq "bad type" $rc 2
run tcpchains -D -p 4444;                 expect_eq "unknown rule" $rc 5
grep -q "no rule on this incoming port" /tmp/err || fail "no extack message"
run tcpchains -a a -p 4444 -i 10.0.0.0 -m 255.0.0.0 -r 80; expect_eq "cond on unknown rule" $rc 5
run tcpchains -a a -p 4444 -i 10.0.0.300 -m 255.0.0.0 -r 80; expect_eq "bad address" $rc 2
run tcpchains -a a -p 4444 -i 10.0.0.0 -m 255.0.x.0 -r 80; expect_eq "bad mask" $rc 2
tcpchains -A a -p 4444 -o 4445
run tcpchains -A a -p 4444 -o 4446;       expect_eq "duplicate rule" $rc 6
run tcpchains -A a -p 4446 -o 4446;       expect_eq "self loop" $rc 1
grep -q "leads back" /tmp/err || fail "no loop message"
run tcpchains -a a -p 4444 -i 10.0.0.0/8 -r 4444; expect_eq "cycle" $rc 1
run tcpchains -d 7 -p 4444;               expect_eq "no such condition" $rc 5
run tcpchains -A a -p 4447 -o 80 --nocase; expect_eq "nocase on an address rule" $rc 2
# The port is busy: refused, and no listener of the rule is left behind.
serve 4448 busy
run tcpchains -A a -p 4448 -o 80;         expect_eq "port in use" $rc 1
grep -q "already listens" /tmp/err || fail "no in-use message"
expect_eq "rules" "$(tcpchains -L | grep -c '^rule')" 1
# Unprivileged callers may list but not change anything.
run su -s /bin/sh nobody -c "tcpchains -F"
expect_eq unprivileged $rc 4
grep -q "Operation not permitted" /tmp/err || fail "no EPERM message"
su -s /bin/sh nobody -c "tcpchains -L" | grep -q "^rule 4444" || fail "unprivileged list"
expect_eq "rules after unprivileged flush" "$(tcpchains -L | grep -c '^rule')" 1
# Module not loaded: exit 3 (checked in a subshell that unloads and reloads).
rmmod openqos
run tcpchains -L;                         expect_eq "not loaded" $rc 3
insmod /openqos.ko
echo "bad input refused with clear errors"

# suite-cost: 200
# An unprivileged user with user and network namespaces of its own (#18 item 6,
# design.md "Limits per namespace"). Mutations need CAP_NET_ADMIN in the user namespace
# that owns the caller's network namespace (GENL_UNS_ADMIN_PERM), so anyone who can
# create a user namespace can configure the module in network namespaces of their own.
# Here "tenant" (uid 1000, in a memory cgroup of its own) tries what such a user can:
#  (a) change this namespace, as itself and as root of a user namespace of its own
#      that shares this network namespace: EPERM, nothing changed;
#  (b) configure and serve in namespaces of its own, where it sees nothing of others',
#      and fuzz the family from there (qostest fuzz: one answer per request,
#      well-formed replies, a message with every refusal), then take everything away;
#  (c) make the module allocate: the kernel memory of its cgroup grows by what 256
#      rules (two with 5,000 address conditions) take, and falls back on a flush;
#  (d) exhaust kernel memory: with its cgroup's memory.max set, fill namespace after
#      namespace (each in a user namespace of its own) to that configuration: its own
#      limit stops it (ENOMEM, or the kill of one of its own processes);
#  (e) stall this namespace: while (c), (d) and the kill of all its namespaces at once
#      run, this namespace adds and deletes a rule, a meter and a group and serves
#      connections through a rule, cycle after cycle, each step within 30 s (a bound
#      for a stall, not a speed: a step takes well under a second here).
if [ ! -e /proc/self/ns/user ] || ! grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
	echo "SKIP 41-userns: this kernel has no user namespaces or no memory cgroups (CONFIG_USER_NS, CONFIG_MEMCG)"
	exit 77
fi
CG=/sys/fs/cgroup/oq-tenant41
mkdir "$CG"
# as_tenant CMD: CMD run by sh as the unprivileged user, inside its memory cgroup.
as_tenant() {
	sh -c 'echo $$ >"$1/cgroup.procs" && exec su -s /bin/sh tenant -c "$2"' sh "$CG" "$1"
}
# kmem: the kernel memory charged to the tenant's cgroup, in bytes.
kmem() { sed -n 's/^kernel \([0-9]*\)$/\1/p' "$CG/memory.stat"; }
# wait_file FILE [TENTHS]: waits for FILE to be non-empty.
wait_file() {
	for i in $(seq 1 "${2:-600}"); do [ -s "$1" ] && return 0; sleep 0.1; done
	return 1
}
# alive PID: PID runs (a zombie does not).
alive() { [ -e /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat; }
teardown() {
	touch /tmp/v41.stop
	[ -e "$CG/cgroup.kill" ] && echo 1 >"$CG/cgroup.kill"
	for i in $(seq 1 300); do grep -q '^populated 0' "$CG/cgroup.events" && break; sleep 0.1; done
	rmdir "$CG" 2>/dev/null || true
	cleanup
}
trap teardown EXIT

# This namespace: a rule to a server, a meter and a group.
serve 9402 victim
tcpchains -A a -p 9400 -o 9402
netmeter -A 9403
skex -N 7 -t rate -r 1000
before=$(tcpchains --save-all)

# --- (a) -------------------------------------------------------------------------
refused() {
	if as_tenant "$2" >/tmp/err 2>&1; then fail "$1: accepted"; fi
	grep -q "not permitted" /tmp/err || fail "$1: $(cat /tmp/err)"
}
refused "a rule here" "tcpchains -A a -p 9410 -o 9402"
refused "a flush here" "tcpchains -F"
refused "a meter here" "netmeter -A 9411"
refused "a group here" "skex -N 8 -t rate -r 5"
refused "a rule here, as root of its own user namespace" "unshare -r tcpchains -A a -p 9410 -o 9402"
refused "a flush here, as root of its own user namespace" "unshare -r tcpchains -F"
refused "a meter here, as root of its own user namespace" "unshare -r netmeter -D 9403"
refused "a group limit here, as root of its own user namespace" "unshare -r skex -s 7 -r 1"
refused "everything here, as root of its own user namespace" "unshare -r tcpchains --restore-all /dev/null"
[ "$(tcpchains --save-all)" = "$before" ] || fail "the tenant changed this namespace"
# Reading is not refused: as for ip(8), any user may list its network namespace.
as_tenant "tcpchains -L" | grep -q "^rule 9400" || fail "the tenant cannot list"

# --- (e), in the background until the end -------------------------------------------
# step WHAT CMD...: one step of a cycle, within 30 s.
step() {
	what=$1; shift
	timeout 30 "$@" >/dev/null 2>/tmp/v41.err || echo "failed: $what: $(cat /tmp/v41.err)"
}
victim() {
	n=0
	while [ ! -e /tmp/v41.stop ]; do
		n=$((n + 1))
		step "add a rule" tcpchains -A a -p 9420 -o 9402
		step "serve through it" qostest load --to 127.0.0.1:9420 --count 2 --expect victim
		step "serve through the first" qostest load --to 127.0.0.1:9400 --count 2 --expect victim
		step "add a meter" netmeter -A 9421
		step "add a group" skex -N 8 -t rate -r 100
		step "set a group" skex -s 7 -r 500
		step "set it back" skex -s 7 -r 1000
		step "delete the group" skex -X 8
		step "delete the meter" netmeter -D 9421
		step "delete the rule" tcpchains -D -p 9420
		echo "cycle $n"
	done
}
victim >/tmp/v41.log 2>&1 &
VICTIM=$!
PIDS="$PIDS $VICTIM"

echo "(a) $(now_ms) ms"
# --- (b) -------------------------------------------------------------------------
SEED=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
N=$(heavy 3000 1000 50000)
cat >/tmp/41-own.sh <<'EOF'
set -e
ip link set lo up
qostest serve --port 9412 --tag tenant >/tmp/t41-serve.log 2>&1 &
spid=$!
for i in $(seq 1 100); do grep -q ready /tmp/t41-serve.log && break; sleep 0.05; done
tcpchains -A a -p 9410 -o 9412
netmeter -A 9413
skex -N 1 -t rate -r 1000
skex -a 1 -p 9412
[ "$(tcpchains -L | grep -c '^rule')" = 1 ] || { echo "sees other rules: $(tcpchains -L)"; exit 1; }
qostest load --to 127.0.0.1:9410 --count 5 --expect tenant >/dev/null
qostest fuzz --seed "$1" --count "$2" --ports 9410,9412,9413 >/tmp/t41-fuzz.out 2>&1 ||
	{ tail -n 20 /tmp/t41-fuzz.out; echo "fuzz seed $1 found violations (replay: qostest fuzz --seed $1 --count $2 --ports 9410,9412,9413)"; exit 1; }
# Whatever the fuzzer left goes, and the namespace serves through a rule again.
: >/tmp/t41-empty.conf
tcpchains --restore-all /tmp/t41-empty.conf
tcpchains -A a -p 9410 -o 9412
qostest load --to 127.0.0.1:9410 --count 2 --expect tenant >/dev/null
tcpchains --restore-all /tmp/t41-empty.conf
if tcpchains --save-all | grep -v '^#' | grep -q .; then echo "left: $(tcpchains --save-all)"; exit 1; fi
kill $spid
echo "own: ok"
EOF
out=$(as_tenant "unshare -r -n sh /tmp/41-own.sh $SEED $N" 2>&1) || fail "in its own namespaces: $out"
fuzzed=$(tail -n 1 /tmp/t41-fuzz.out)
echo "$fuzzed" | grep -q "sent=$N " || fail "the fuzzer stopped early: $fuzzed"

echo "(b) $(now_ms) ms"
# --- (c) -------------------------------------------------------------------------
# 256 rules: 254 plain, two with 5,000 address conditions each.
awk 'BEGIN {
	for (p = 13001; p <= 13254; p++) print "-A a -p " p " -o 9999"
	for (p = 13255; p <= 13256; p++) {
		print "-A a -p " p " -o 9999"
		for (i = 0; i < 5000; i++) printf "-a a -p %d -i 10.%d.%d.%d/32 -r 9998\n", p, p - 13250, int(i / 256), i % 256
	}
}' >/tmp/41-fill.rules
cat >/tmp/41-fill.sh <<'EOF'
ip link set lo up
echo started >/tmp/t41-fill.state
while [ ! -e /tmp/t41-fill.go ]; do sleep 0.1; done
tcpchains --restore /tmp/41-fill.rules 2>/tmp/t41-fill.err || { echo "refused" >/tmp/t41-fill.state; exit 1; }
echo filled >/tmp/t41-fill.state
while [ ! -e /tmp/t41-fill.flush ]; do sleep 0.1; done
tcpchains -F
echo flushed >/tmp/t41-fill.state
while [ ! -e /tmp/t41-fill.exit ]; do sleep 0.1; done
EOF
as_tenant "unshare -r -n sh /tmp/41-fill.sh" &
FILL=$!
wait_file /tmp/t41-fill.state || fail "the tenant did not start"
sleep 1
base=$(kmem)
touch /tmp/t41-fill.go
for i in $(seq 1 3000); do grep -q started /tmp/t41-fill.state || break; sleep 0.1; done
expect_eq "the tenant's 256 rules" "$(cat /tmp/t41-fill.state /tmp/t41-fill.err 2>/dev/null)" filled
sleep 1
filled=$(kmem)
touch /tmp/t41-fill.flush
for i in $(seq 1 600); do grep -q flushed /tmp/t41-fill.state && break; sleep 0.1; done
expect_eq "the tenant's flush" "$(cat /tmp/t41-fill.state)" flushed
delta=$((filled - base))
# What the design counts (design.md): a condition takes about 100 bytes (a 64-byte
# slab object, its pointer in the list, 24 bytes of index), a rule's listener a
# struct sock of TCP (over 2 KiB) with its struct socket. At least 64 bytes per
# condition and 2 KiB per listener must have been charged to the tenant.
floor=$((10000 * 64 + 256 * 2048))
[ "$delta" -ge "$floor" ] || fail "charged to the tenant: $delta bytes for 256 rules and 10,000 conditions, want at least $floor"
# Freed on the flush (listeners after a grace period): back to within a tenth of it.
for i in $(seq 1 300); do [ $(($(kmem) - base)) -le $((delta / 10)) ] && break; sleep 0.1; done
after=$(kmem)
[ $((after - base)) -le $((delta / 10)) ] || fail "not given back on the flush: $base before, $filled filled, $after flushed"
touch /tmp/t41-fill.exit
wait $FILL || true

echo "(c) $(now_ms) ms: base $base filled $filled flushed $after"
# --- (d) -------------------------------------------------------------------------
# Room for three such namespaces and a half.
limit=$(($(cat "$CG/memory.current") + 3 * delta + delta / 2))
echo "$limit" >"$CG/memory.max"
cat >/tmp/41-ns.sh <<'EOF'
ip link set lo up
if tcpchains --restore /tmp/41-fill.rules 2>/tmp/t41-ns$1.err; then
	echo filled >/tmp/t41-ns$1.state
else
	echo "refused (exit $?)" >/tmp/t41-ns$1.state
fi
exec sleep 3600
EOF
full=0
stop=
for i in $(seq 1 10); do
	as_tenant "unshare -r -n sh /tmp/41-ns.sh $i" &
	pid=$!
	for t in $(seq 1 3000); do
		[ -s /tmp/t41-ns$i.state ] && break
		alive $pid || break
		sleep 0.1
	done
	state=$(cat /tmp/t41-ns$i.state 2>/dev/null || echo "killed")
	[ "$state" = filled ] || { stop="namespace $i: $state: $(cat /tmp/t41-ns$i.err 2>/dev/null)"; break; }
	full=$((full + 1))
done
[ -n "$stop" ] || fail "ten namespaces of 256 rules each fit in a limit for three and a half"
[ "$full" -ge 2 ] || fail "only $full namespaces filled before the limit: $stop"
events=$(tr '\n' ' ' <"$CG/memory.events")
max_hits=$(sed -n 's/^max \([0-9]*\)$/\1/p' "$CG/memory.events")
kills=$(sed -n 's/^oom_kill \([0-9]*\)$/\1/p' "$CG/memory.events")
[ "$max_hits" -gt 0 ] || fail "the tenant never reached its limit: $events"
case "$stop" in
*"Cannot allocate memory"* | *"out of memory"*) ;;
*) [ "$kills" -gt 0 ] || fail "stopped neither by ENOMEM nor by a kill in its cgroup: $stop ($events)" ;;
esac
[ "$(cat "$CG/memory.current")" -le "$limit" ] || fail "over its limit: $(cat "$CG/memory.current") > $limit"

echo "(d) $(now_ms) ms: $full full, $stop; $events"
# --- teardown of all its namespaces at once ---------------------------------------
echo 1 >"$CG/cgroup.kill"
for i in $(seq 1 600); do grep -q '^populated 0' "$CG/cgroup.events" && break; sleep 0.1; done
grep -q '^populated 0' "$CG/cgroup.events" || fail "the tenant's processes did not go"
for i in $(seq 1 600); do [ $(($(kmem) - base)) -le $((delta / 10)) ] && break; sleep 0.1; done
[ $(($(kmem) - base)) -le $((delta / 10)) ] || fail "its namespaces' memory not given back: $(kmem) (base $base)"

echo "teardown $(now_ms) ms"
# --- (e) ---------------------------------------------------------------------------
# Two more cycles here after the tenant's namespaces went.
c0=$(grep -c '^cycle' /tmp/v41.log || true)
for i in $(seq 1 1200); do [ "$(grep -c '^cycle' /tmp/v41.log || true)" -ge $((c0 + 2)) ] && break; sleep 0.1; done
touch /tmp/v41.stop
wait $VICTIM || true
cycles=$(grep -c '^cycle' /tmp/v41.log || true)
if grep -q '^failed' /tmp/v41.log; then fail "this namespace while the tenant worked: $(grep '^failed' /tmp/v41.log | head -n 3)"; fi
[ "$cycles" -ge 3 ] || fail "only $cycles cycles here while the tenant worked"
[ "$(tcpchains --save-all)" = "$before" ] || fail "this namespace's configuration changed"
echo "unprivileged tenant: EPERM here (9 ways); own namespaces served and fuzzed ($N messages, seed $SEED); $delta bytes charged for 256 rules with 10,000 conditions (floor $floor), given back; stopped by its memory.max after $full full namespaces ($stop); here $cycles cycles of configuration and traffic, none stalled"

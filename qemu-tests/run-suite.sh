# SPDX-License-Identifier: GPL-2.0
# Runs every scenario in a fresh network namespace; one line per test, then a summary
# "N passed, N failed, N skipped".
#
# Scheduling: a scenario's header may say how it must run.
#   "# suite: solo"       alone, no other scenario beside it (precision measurements of
#                          rates and bandwidths must not share the CPUs with load);
#   "# suite: exclusive"  alone, because it unloads or reloads the module.
# Every other scenario runs in a pool, OQ_JOBS at a time (default 3): each has its own
# network namespace, and most of their time is spent waiting (timeouts, rate windows,
# clients at a few connections per second on the debug kernel). The pool starts the
# longest first, so that no long one runs alone at the end: "# suite-cost: SECONDS"
# in a header is a scenario's usual time in the pool on the debug kernel (default 30).
#
# Kernel reports: the console only shows emergency messages (dmesg -n 1), so the
# whole kernel log is read instead. Every scenario writes begin/end markers into the log
# (/dev/kmsg); after each one finishes, the new part of the log is collected and any
# report in it (lockdep, KASAN, might_sleep, RCU, WARN, hung task, kmemleak...) is
# attributed to every scenario that was running when it was printed, which then fails.
# A scenario's own output may contain "SKIP case: why" lines for cases that cannot run
# on this kernel; they are echoed and counted as skipped, never as passed. A scenario
# that cannot run at all prints its SKIP line and exits 77: skipped, not passed.
pass=0
fail=0
skip=0
jobs=${OQ_JOBS:-3}
KLOG=/tmp/kernel.log
REPORT='BUG:|WARNING:|Oops|KASAN:|UBSAN:|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU usage|sleeping function called from invalid context|RCU stall|self-detected stall|blocked for more than|soft lockup|hard LOCKUP|unreferenced object|suspected memory leak|ref_tracker:|refcount_t:|list_add corruption|list_del corruption|Kernel panic|general protection fault|stack-protector|WARN_ON'
suite_start=$(awk '{ print int($1) }' /proc/uptime)
: >/tmp/times

# collect: appends the kernel log printed since the last call to $KLOG.
collect() { dmesg -c >>"$KLOG" 2>/dev/null; }

# reports NAME: the kernel reports printed while NAME ran (with 30 lines of context
# each), from $KLOG. A report printed while several scenarios ran is listed for each.
reports() {
	awk -v me="$1" -v re="$REPORT" '
		/openqos-suite: begin / { run[$NF] = 1; next }
		/openqos-suite: end /   { delete run[$NF]; next }
		{
			if ($0 ~ re && (me in run)) { ctx = 30; others = "" 
				for (n in run) if (n != me) others = others " " n
				if (others != "") print "    (concurrent with" others ")" }
			if (ctx > 0) { print "    " $0; ctx-- }
		}' "$KLOG"
}

# verdict NAME RC SECS: prints the scenario's line and counts it.
# (Functions keep their variables local: the callers' loops use the same names.)
verdict() {
	local name=$1 rc=$2 secs=$3 rep skips
	collect
	rep=$(reports "$name")
	skips=$(grep -c '^SKIP ' /tmp/$name.out)
	[ "$skips" -gt 0 ] && grep '^SKIP ' /tmp/$name.out && skip=$((skip + skips))
	echo "$secs $name" >>/tmp/times
	if [ -n "$rep" ]; then
		fail=$((fail + 1))
		echo "FAIL $name (${secs}s): kernel report in the log while it ran"
		echo "$rep" | head -n 80
		[ "$rc" -eq 0 ] || sed 's/^/    /' /tmp/$name.out | tail -n 20
	elif [ "$rc" -eq 77 ] && [ "$skips" -gt 0 ]; then
		# Exit 77 with SKIP lines: the whole scenario cannot run on this kernel.
		:
	elif [ "$rc" -eq 0 ]; then
		pass=$((pass + 1))
		echo "PASS $name (${secs}s) $(grep -v '^SKIP ' /tmp/$name.out | tail -n1)"
	else
		fail=$((fail + 1))
		echo "FAIL $name (${secs}s, exit $rc)"
		sed 's/^/    /' /tmp/$name.out | tail -n 40
	fi
}

# start NAME FILE: runs a scenario in the background; its exit code lands in
# /tmp/NAME.rc.
start() {
	rm -f /tmp/$1.rc
	awk '{ print int($1) }' /proc/uptime >/tmp/$1.start
	(
		echo "openqos-suite: begin $1" >/dev/kmsg
		# Its own network namespace, and its own /tmp, /srv and /var/tmp (scenarios
		# running side by side use the same file names for their servers' logs). A
		# scenario that hangs is killed after 25 minutes (the slowest takes under 5 on
		# this machine) and fails, so the suite still finishes and reports.
		timeout -s KILL 1500 unshare -n -m sh -c "mount -t tmpfs tmp /tmp || exit 100
			mount -t tmpfs srv /srv || exit 100
			mkdir -p /var/tmp && mount -t tmpfs vartmp /var/tmp || exit 100
			. /qemu-tests/lib.sh; . $2" >/tmp/$1.out 2>&1
		rc=$?
		echo "openqos-suite: end $1" >/dev/kmsg
		echo $rc >/tmp/$1.rc
	) &
}

# finish NAME: reports a scenario whose exit code is in.
finish() {
	local secs
	secs=$(($(awk '{ print int($1) }' /proc/uptime) - $(cat /tmp/$1.start)))
	verdict "$1" "$(cat /tmp/$1.rc)" "$secs"
}

selected() {
	local g
	[ -z "$OQ_FILTER" ] && return 0
	for g in $(echo "$OQ_FILTER" | tr , ' '); do
		case "$1" in $g) return 0 ;; esac
	done
	return 1
}

# kmemleak: whatever the kernel leaked while booting (before the module) is not ours.
if [ -e /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak; echo clear >/sys/kernel/debug/kmemleak
fi
# The module as `make install` put it (the staging install in /lib/modules).
modprobe openqos || { echo "FAIL modprobe openqos (staging install)"; echo "0 passed, 1 failed"; exit 1; }
dmesg -n 1
# Whatever the kernel reported while booting and loading the module.
echo "openqos-suite: begin boot" >>"$KLOG"
collect
if [ -n "$(reports boot)" ]; then
	fail=$((fail + 1)); echo "FAIL boot: kernel report while booting or loading the module"
	reports boot | head -n 60
fi
echo "openqos-suite: end boot" >>"$KLOG"
# The scanner must see what the kernel logs: a line shaped like a report, written to the
# kernel log inside a window of its own, has to be found there (and only there).
echo "openqos-suite: begin log-scanner" >/dev/kmsg
echo "WARNING: openqos-suite self-test of the kernel log scanner (not a real report)" >/dev/kmsg
echo "openqos-suite: end log-scanner" >/dev/kmsg
collect
if reports log-scanner | grep -q "self-test of the kernel log scanner"; then
	pass=$((pass + 1)); echo "PASS log-scanner (a report-shaped line in the kernel log was found)"
else
	fail=$((fail + 1)); echo "FAIL log-scanner: a report-shaped line in the kernel log was not found"
fi

pool=""
serial=""
for t in /qemu-tests/scenarios/*.sh; do
	name=$(basename "$t" .sh)
	selected "$name" || continue
	if grep -Eq '^# suite: (solo|exclusive)' "$t"; then
		serial="$serial $name"
	else
		cost=$(sed -n 's/^# suite-cost: \([0-9]*\).*/\1/p' "$t" | head -n 1)
		pool="$pool ${cost:-30}:$name"
	fi
done
# Longest first (then by name).
pool=$(for p in $pool; do echo "$p"; done | sort -t: -k1,1nr -k2,2 | cut -d: -f2)

# reap: reports the running scenarios that have finished and takes them off $running.
reap() {
	local r
	sleep 0.2
	for r in $running; do
		if [ -e /tmp/$r.rc ]; then
			finish "$r"
			running=$(echo " $running " | sed "s/ $r / /")
		fi
	done
}

# The pool: up to $jobs at a time, in file order.
running=""
for name in $pool; do
	while [ "$(echo $running | wc -w)" -ge "$jobs" ]; do reap; done
	start "$name" /qemu-tests/scenarios/$name.sh
	running="$running $name"
done
while [ -n "$(echo $running)" ]; do reap; done

# Solo and exclusive scenarios, one at a time.
for name in $serial; do
	start "$name" /qemu-tests/scenarios/$name.sh
	wait
	finish "$name"
done

# Unload must be clean, and nothing the module allocated may be left behind.
echo "openqos-suite: begin final-rmmod" >/dev/kmsg
if lsmod | grep -q openqos && ! rmmod openqos; then
	fail=$((fail + 1)); echo "FAIL final-rmmod"
fi
if [ -e /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak; sleep 6; echo scan >/sys/kernel/debug/kmemleak
	# (Not `test -s`: a debugfs file has size 0 whatever it holds. Until December 2026
	# this check used -s and so never saw a leak.)
	leaks=$(cat /sys/kernel/debug/kmemleak)
	if [ -n "$leaks" ]; then
		fail=$((fail + 1)); echo "FAIL kmemleak: $(echo "$leaks" | grep -c '^unreferenced object') objects"
		echo "$leaks" | sed 's/^/    /' | head -n 150
	else
		pass=$((pass + 1)); echo "PASS kmemleak (nothing leaked)"
	fi
fi
echo "openqos-suite: end final-rmmod" >/dev/kmsg
collect
if [ -n "$(reports final-rmmod)" ]; then
	fail=$((fail + 1)); echo "FAIL final-rmmod: kernel report during the final unload"
	reports final-rmmod | head -n 60
fi
# Reports printed outside every scenario (between them, by a timer or a work item).
orphans=$(awk -v re="$REPORT" '
	/openqos-suite: begin / { run[$NF] = 1; next }
	/openqos-suite: end /   { delete run[$NF]; next }
	{ n = 0; for (r in run) n++; if ($0 ~ re && n == 0) print "    " $0 }' "$KLOG")
if [ -n "$orphans" ]; then
	fail=$((fail + 1)); echo "FAIL kernel-log: reports outside any scenario"
	echo "$orphans" | head -n 40
fi
echo "suite wall time: $(($(awk '{ print int($1) }' /proc/uptime) - suite_start))s; slowest: $(sort -rn /tmp/times | head -n 5 | awk '{ printf "%s%s %ss", sep, $2, $1; sep = ", " }')"
echo "$pass passed, $fail failed, $skip skipped"

# SPDX-License-Identifier: GPL-2.0
# Runs every scenario in a fresh network namespace; one line per test, then a summary.
pass=0
fail=0
insmod /openqos.ko || { echo "FAIL insmod"; echo "0 passed, 1 failed"; exit 1; }
dmesg -n 1
for t in /qemu-tests/scenarios/*.sh; do
	name=$(basename "$t" .sh)
	if [ -n "$OQ_FILTER" ]; then
		# A comma-separated list of globs.
		hit=
		for g in $(echo "$OQ_FILTER" | tr , ' '); do
			case "$name" in $g) hit=1 ;; esac
		done
		[ -n "$hit" ] || continue
	fi
	start=$(date +%s)
	unshare -n sh -c ". /qemu-tests/lib.sh; . $t" >/tmp/$name.out 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1))
		echo "PASS $name (${secs}s) $(tail -n1 /tmp/$name.out)"
	else
		fail=$((fail + 1))
		echo "FAIL $name (${secs}s, exit $rc)"
		sed 's/^/    /' /tmp/$name.out | tail -n 40
	fi
done
# Unload must be clean, and nothing the module allocated may be left behind.
if lsmod | grep -q openqos && ! rmmod openqos; then
	fail=$((fail + 1)); echo "FAIL final-rmmod"
fi
if [ -e /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak; sleep 6; echo scan >/sys/kernel/debug/kmemleak
	if [ -s /sys/kernel/debug/kmemleak ]; then
		fail=$((fail + 1)); echo "FAIL kmemleak"
		cat /sys/kernel/debug/kmemleak
	else
		pass=$((pass + 1)); echo "PASS kmemleak (nothing leaked)"
	fi
fi
echo "$pass passed, $fail failed"

# suite: exclusive (unloads and reloads the module)
# Run like a system service: the guest holds the staging install (make install into a
# root, as a package would lay it out), the suite loaded the module from it with
# modprobe, and a saved configuration comes back by the very commands the installed
# openqos.service runs at boot (read from the unit file, run as systemd would: pre,
# start, and later reload).
unit=/usr/lib/systemd/system/openqos.service
[ -f "$unit" ] || fail "no installed $unit"
[ -f /usr/lib/systemd/system/qosmgr.service ] || fail "no installed qosmgr.service"
[ -f /etc/openqos/qosmgr.toml.example ] || fail "no example configuration"
for t in tcpchains netmeter skex qosmgr; do
	[ -x /usr/sbin/$t ] && [ -f /usr/share/man/man8/$t.8 ] &&
		[ -f /usr/share/bash-completion/completions/$t ] || fail "$t not installed whole"
done
ko=$(find /lib/modules -name openqos.ko)
[ -n "$ko" ] || fail "openqos.ko is not in /lib/modules"
grep -q "extra/openqos.ko" /lib/modules/*/modules.dep || fail "openqos.ko is not in modules.dep"
add_client_addrs 10.0.9.1/32
serve 7982 svc
tcpchains -Q 7982 --classes 2 --deadline 1:3000
tcpchains -A a -p 7980 -o 7982 --prio 1
tcpchains -a a -p 7980 -i 10.0.9.1/32 -r 7982 --prio 0
skex -N 4 -t rate -r 40
skex -a 4 -p 7982
tcpchains --save-all >/etc/openqos/openqos.conf
# run_unit KEY...: the unit's commands for these keys, in order, as systemd runs them.
run_unit() {
	for k in "$@"; do
		sed -n "s/^$k=//p" "$unit" >/tmp/unit.cmds
		[ -s /tmp/unit.cmds ] || fail "no $k= in $unit"
		while read -r cmd; do
			$cmd || fail "$k=$cmd"
		done </tmp/unit.cmds
	done
}
rmmod openqos
lsmod | grep -q openqos && fail "still loaded"
run_unit ExecStartPre ExecStart
lsmod | grep -q '^openqos' || fail "openqos.service's commands did not load the module"
tcpchains --save-all | diff /etc/openqos/openqos.conf - || fail "the restored configuration differs from the saved one"
qostest load --to 127.0.0.1:7980 --from 10.0.9.1 --count 3 --expect svc >/dev/null || fail "class 0 after restore"
qostest load --to 127.0.0.1:7980 --count 3 --expect svc >/dev/null || fail "class 1 after restore"
expect_eq "class 0 released" "$(netmeter -Q -j -p 7982 | qostest json prios.0.classes.0.released)" 3
# An edited file and `systemctl reload openqos`.
sed -i 's/--deadline 1:3000/--deadline 1:4000/' /etc/openqos/openqos.conf
run_unit ExecReload
tcpchains -S | grep -q -- '--deadline 1:4000' || fail "reload: $(tcpchains -S)"
skex -X 4
tcpchains -X 7982
tcpchains -F
echo "staging install: modprobe from /lib/modules, openqos.service's commands restored $(grep -c . /etc/openqos/openqos.conf) saved lines exactly, reload applied an edit"

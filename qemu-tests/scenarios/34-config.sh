# One configuration file for everything (tcpchains --save-all / --restore-all): the rule
# set with a prioritized queue, ports metered on request, socket groups of the three
# types with their ports. The round trip is exact; --test changes nothing; a file the
# kernel refuses half-way leaves the previous configuration exactly as it was.
add_client_addrs 10.0.9.1/32
serve 7702 a
serve 7703 b
tcpchains -Q 7703 --classes 2 --deadline 1:5000
tcpchains -A a -p 7700 -o 7702
tcpchains -a a -p 7700 -i 10.0.9.1/32 -r 7703 --prio 0
netmeter -A 7704
skex -N 1 -t rate -r 50 -b 5
skex -a 1 -p 7702
skex -N 2 -t ratio
skex -a 2 -p 7703 -w 3
skex -a 2 -p 7705 -w 1
skex -N 3 -t output -r 102400 --ftp
skex -a 3 -p 7706
tcpchains --save-all >/tmp/all.conf
for w in "-Q 7703" "-A a -p 7700" "--prio 0" "meter 7704" "group 1 rate rate 50 burst 5" \
	"member 2 7703 weight 3" "group 3 output rate 102400" "member 3 7706"; do
	grep -q -- "$w" /tmp/all.conf || fail "saved without '$w': $(cat /tmp/all.conf)"
done
# Everything gone, then back from the file.
tcpchains -F
tcpchains -X 7703
skex -X 1
skex -X 2
skex -X 3
netmeter -D 7704
tcpchains --save-all | grep -qv '^#' && fail "not empty: $(tcpchains --save-all)"
tcpchains --restore-all /tmp/all.conf
tcpchains --save-all | diff /tmp/all.conf - || fail "the round trip is not exact"
qostest load --to 127.0.0.1:7700 --from 10.0.9.1 --count 3 --expect b >/dev/null || fail "class 0 after restore"
qostest load --to 127.0.0.1:7700 --count 3 --expect a >/dev/null || fail "default after restore"
# --test: checked, nothing changed.
sed 's/-o 7702/-o 7712/' /tmp/all.conf >/tmp/edit.conf
tcpchains --restore-all /tmp/edit.conf --test
tcpchains --save-all | diff /tmp/all.conf - || fail "--test changed something"
# All or nothing: the rules and a new group go in, then the group's 17th port is refused
# (16 at most): everything is put back as it was.
cp /tmp/edit.conf /tmp/bad.conf
echo "group 9 ratio" >>/tmp/bad.conf
for p in $(seq 7801 7817); do echo "member 9 $p weight 1"; done >>/tmp/bad.conf
msg=$(tcpchains --restore-all /tmp/bad.conf 2>&1) && fail "17 ports in a group accepted"
case "$msg" in *"previous configuration is back"*) ;; *) fail "rollback: $msg" ;; esac
tcpchains --save-all | diff /tmp/all.conf - || fail "a refused restore left changes"
# Ports that change roles: 7700 goes from a rule's incoming port to a group's member
# and a metered port, 7704 (metered) and 7706 (a member) become rules' incoming ports,
# the prioritized queue and its meter go. The kernel never lets a rule own a server's
# port (a member, a queue, a meter on request), so the restore must free each port
# before it takes its new role; the way back too.
cat >/tmp/swap.conf <<EOF
-A a -p 7704 -o 7702
-A a -p 7706 -o 7702
meter 7700
group 1 rate rate 50 burst 5
member 1 7700
EOF
tcpchains --restore-all /tmp/swap.conf || fail "restoring ports with swapped roles"
tcpchains --save-all >/tmp/swap.saved
for w in "-A a -p 7704 -o 7702" "-A a -p 7706 -o 7702" "meter 7700" "member 1 7700"; do
	grep -q -- "$w" /tmp/swap.saved || fail "swapped roles without '$w': $(cat /tmp/swap.saved)"
done
! grep -Eq -- "-p 7700|7703|group [23]" /tmp/swap.saved || fail "swapped roles kept the old: $(cat /tmp/swap.saved)"
qostest load --to 127.0.0.1:7704 --count 2 --expect a >/dev/null || fail "7704 as a rule's port"
tcpchains --restore-all /tmp/all.conf || fail "back from the swapped roles"
tcpchains --save-all | diff /tmp/all.conf - || fail "back from swapped roles: not exact"
# And the kernel's side of it: a rule cannot take a server's port.
for p in 7702 7703 7704; do
	msg=$(tcpchains -A a -p $p -o 7702 2>&1) && fail "a rule took server port $p"
	case "$msg" in *"Device or resource busy"*) ;; *) fail "rule on server port $p: $msg" ;; esac
done
echo "save-all: $(grep -vc '^#' /tmp/all.conf) lines round trip exactly; --test changes nothing; a refused restore rolled back; ports swapped roles and back; rules refused on a member, a queue and a metered port"

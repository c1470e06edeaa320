# suite: exclusive (unloads and reloads the module)
# kTLS and IPV6_ADDRFORM replace a socket's operations (sock->ops) behind the meter's
# back. The first kTLS socket of a family makes tls copy that socket's operations into
# its own global tables (tls_build_proto): if that socket was accepted from a metered
# port, every kTLS socket of the host would call the meter's wrappers, and after rmmod
# jump into freed module text. And a socket whose operations were replaced never runs
# the wrapped release, so its meter record would stay until the meter goes. Here the
# first kTLS sockets of the boot (IPv4 and IPv6) are accepted from metered ports; then
# kTLS on unrelated connections, an unload with kTLS connections open, kTLS traffic on
# them and on new ones after it, and a reload.
K=/tmp/k26
rm -f $K.*
# wait_line FILE TEXT: waits up to 20 s for TEXT in FILE.
wait_line() {
	for i in $(seq 1 200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "no '$2' in $1: $(cat "$1")"
}
# Metered: kTLS on accepted IPv4 and IPv6 sockets (the first of the boot), and
# IPV6_ADDRFORM on an accepted v4-mapped socket. The connections stay open across the
# unload below.
# (bg: killed if the scenario fails, which would otherwise wait for them forever.)
bg qostest ktls --port 8261 --count 2 --go-file $K.go --pause-file $K.unloaded >$K.v4 2>&1
a=$!
bg qostest ktls --addr ::1 --port 8262 --count 2 --go-file $K.go --pause-file $K.unloaded >$K.v6 2>&1
b=$!
bg qostest ktls --addr :: --connect 127.0.0.1 --port 8263 --addrform --count 2 \
	--go-file $K.go --pause-file $K.unloaded >$K.af 2>&1
c=$!
for f in v4 v6 af; do wait_line $K.$f listening; done
for p in 8261 8262 8263; do
	netmeter -A $p
	expect_eq "metered listeners of $p" "$(meter_of $p listeners)" 1
done
touch $K.go
for f in v4 v6 af; do wait_line $K.$f "round 1 ok"; done
for p in 8261 8262 8263; do
	expect_eq "accepted on $p" "$(meter_of $p accepted)" 2
	# The sockets left the meter when their operations were replaced: their records
	# are released at once, not when the meter goes.
	wait_meter $p open 0
done
# Unrelated, unmetered kTLS connections, also open across the unload.
bg qostest ktls --port 8264 --count 2 --go-file $K.go --pause-file $K.unloaded >$K.free 2>&1
d=$!
wait_line $K.free "round 1 ok"
rmmod openqos || fail "rmmod with kTLS connections open"
# kTLS traffic after the unload: on the connections opened before it, and on new ones.
touch $K.unloaded
for x in "$a v4" "$b v6" "$c af" "$d free"; do
	set -- $x
	wait $1 || fail "connection $2 across the unload: $(cat $K.$2)"
done
qostest ktls --port 8265 --count 2 >$K.after 2>&1 || fail "kTLS after unload: $(cat $K.after)"
qostest ktls --addr ::1 --port 8265 --count 2 >$K.after6 2>&1 ||
	fail "kTLS (IPv6) after unload: $(cat $K.after6)"
insmod /openqos.ko
# Metered again after the reload: kTLS on accepted sockets still leaves no record.
rm -f $K.go $K.unloaded
bg qostest ktls --port 8266 --count 2 --go-file $K.go >$K.re 2>&1
e=$!
wait_line $K.re listening
netmeter -A 8266
touch $K.go
wait $e || fail "kTLS after reload: $(cat $K.re)"
expect_eq "accepted after reload" "$(meter_of 8266 accepted)" 2
wait_meter 8266 open 0
netmeter -D 8266
echo "kTLS and IPV6_ADDRFORM on metered connections: records released, no pointer into the module left behind, unload clean"

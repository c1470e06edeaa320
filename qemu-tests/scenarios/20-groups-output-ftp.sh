# suite: solo (measures rates, bandwidths or delays: no other load beside it)
# Output groups: the paper's Table 1. Two unmodified vsftpd instances (passive mode,
# sendfile), restricted clients (128.143/16) forwarded to 2021, everyone else to 3021;
# an output group of 100 KiB/s with FTP watching on 2021. 1, 2 and 4 restricted users
# download at once, beside an unrestricted one: the restricted class stays at or under
# its limit (+5 %) and near it, the unrestricted one gets far more, every file arrives
# intact, and the passive data connections (PASV and EPSV, IPv4 and IPv6) are counted in
# the class. Then a non-blocking server (lighttpd, epoll + sendfile/writev) in an output
# group: limited alike, without a busy loop.
LIMIT=102400
add_client_addrs 128.143.1.1/32 128.143.1.2/32 128.143.1.3/32 128.143.1.4/32 10.9.9.9/32

# xfer_ms OUT URL [curl options]: downloads URL to OUT; prints the milliseconds from its
# first byte to its last (FTP logins and the fork of a vsftpd session are not data).
xfer_ms() {
	out=$1 url=$2; shift 2
	curl -s -g --max-time 60 "$@" -o "$out" -w '%{time_starttransfer} %{time_total}' "$url" |
		awk '{ printf "%d\n", ($2 - $1) * 1000 + 1 }'
}

SIZE=$(heavy 2097152 1048576)
for p in 2021 3021 2023; do
	vsftpd_on $p $([ $p = 2023 ] && echo ipv6)
done
# One random file; every class serves the same bytes. With N restricted users at once,
# each downloads a part of it (part2.bin, part4.bin: 1/N), so every batch keeps the
# class busy about as long as the single user's (the rate is measured over 6 s of it),
# not N times as long.
head -c "$SIZE" /dev/urandom >/tmp/big.bin
for p in 2021 3021 2023; do cp /tmp/big.bin /srv/ftp$p/big.bin; done
BIG=$(wc -c </tmp/big.bin)
SUM=$(md5sum </tmp/big.bin | cut -d' ' -f1)
for n in 2 4; do
	head -c $((BIG / n)) /tmp/big.bin >/srv/ftp2021/part$n.bin
	eval "SUM$n=$(md5sum </srv/ftp2021/part$n.bin | cut -d' ' -f1)"
done
# A four times larger file for the unrestricted user, so it is busy all along.
cat /tmp/big.bin /tmp/big.bin /tmp/big.bin /tmp/big.bin >/srv/ftp3021/huge.bin
sleep 0.5

tcpchains -A a -p 21 -o 3021
tcpchains -a a -p 21 -i 128.143.0.0 -m 255.255.0.0 -r 2021
skex -N 1 -t output -r 100K --ftp
skex -a 1 -p 2021
skex -L -g 1

# class_rate PORT SECONDS: waits until a transfer from PORT's servers is under way, then
# prints the bytes per second they send over SECONDS (netmeter's watch mode: the meter
# counts a governed send piece by piece, and netmeter times the interval itself).
class_rate() {
	tx0=$(meter_of $1 tx_bytes)
	for i in $(seq 1 200); do
		[ "$(meter_of $1 tx_bytes)" -gt $((tx0 + 30000)) ] && break
		sleep 0.1
	done
	netmeter -p $1 -i $2 -c 1 -j | qostest json ports.0.tx_bytes_per_s | cut -d. -f1
}

# batch N [curl options]: N restricted users download big.bin at once, beside one
# unrestricted user; the restricted class's aggregate rate over 6 s of the transfer.
batch() {
	n=$1; shift
	joined0=$(skex -L -j -g 1 | qostest json groups.0.ftp_joined)
	curl -s --max-time 120 --interface 10.9.9.9 -o /tmp/normal.out \
		-w '%{size_download} %{speed_download}\n' ftp://127.0.0.1:21/huge.bin >/tmp/normal.stat &
	u=$!
	pids=""
	file=big.bin; want=$SUM
	[ "$n" -gt 1 ] && file=part$n.bin && eval "want=\$SUM$n"
	for i in $(seq 1 $n); do
		curl -s --max-time 180 "$@" --interface 128.143.1.$i -o /tmp/r$i.out ftp://127.0.0.1:21/$file &
		pids="$pids $!"
	done
	rate=$(class_rate 2021 6)
	for p in $pids; do wait $p || fail "restricted download failed ($n users)"; done
	wait $u || fail "unrestricted download failed"
	for i in $(seq 1 $n); do
		expect_eq "restricted file $i intact" "$(md5sum </tmp/r$i.out | cut -d' ' -f1)" "$want"
	done
	expect_eq "unrestricted file intact" "$(wc -c </tmp/normal.out)" $((BIG * 4))
	normal=$(cut -d' ' -f2 /tmp/normal.stat | cut -d. -f1)
	joined=$(($(skex -L -j -g 1 | qostest json groups.0.ftp_joined) - joined0))
	[ "$joined" -ge "$n" ] || fail "$n users: only $joined data listeners joined the group"
	echo "$n restricted: $rate B/s; unrestricted $normal B/s; $joined data ports joined"
	within_pct "$rate" 90 105 $LIMIT || fail "$n restricted users: $rate B/s against $LIMIT"
	[ "$normal" -gt $((LIMIT * 3)) ] || fail "the unrestricted class got only $normal B/s"
	table="$table $n:$rate/$normal"
}

table=""
tx0=$(meter_of 2021 tx_bytes)
batch 1 --disable-epsv
batch 2
batch 4
# The class's bytes are the data connections' (counted in the group and in the meter):
# the whole file in each of the three batches.
tx=$(($(meter_of 2021 tx_bytes) - tx0))
[ "$tx" -ge $((BIG * 3)) ] || fail "meter of 2021 counted $tx bytes of $((BIG * 3))"
admitted=$(skex -L -j -g 1 | qostest json groups.0.admitted)
[ "$admitted" -ge $((BIG * 3)) ] || fail "group admitted $admitted bytes"
# The unrestricted server's port is not in the group.
expect_eq "3021 ungrouped" "$(meter_of 3021 grouped)" false

# --- IPv6, EPSV, no rule in between. ---
skex -N 2 -t output -r 100K --ftp
skex -a 2 -p 2023
curl -s -g --max-time 60 -o /tmp/v6.out "ftp://[::1]:2023/big.bin" &
c=$!
rate6=$(class_rate 2023 6)
wait $c || fail "IPv6 download"
expect_eq "IPv6 file intact" "$(md5sum </tmp/v6.out | cut -d' ' -f1)" "$SUM"
within_pct "$rate6" 90 105 $LIMIT || fail "IPv6 EPSV: $rate6 B/s"
expect_eq "IPv6 data port joined" "$(skex -L -j -g 2 | qostest json groups.0.ftp_joined)" 1
# Without --ftp the data connections are not governed: the download is fast.
skex -s 2 --no-ftp
dt=$(xfer_ms /tmp/v6.out "ftp://[::1]:2023/big.bin")
[ $((BIG * 1000 / dt)) -gt $((LIMIT * 2)) ] || fail "--no-ftp still limited the data connection"
skex -X 2

# --- A non-blocking server: lighttpd (epoll; sendfile or writev). ---
lighttpd_instances 8081
cp /tmp/big.bin /srv/www8081/big.bin
srv=$(pidof lighttpd | awk '{ print $1 }')
skex -N 3 -t output -r 100K
skex -a 3 -p 8081
curl -s --max-time 60 -o /tmp/web.out http://127.0.0.1:8081/big.bin &
c=$!
c0=$(cpu_ticks $srv)
rateh=$(class_rate 8081 6)
cpu=$(($(cpu_ticks $srv) - c0))
wait $c || fail "http download"
expect_eq "http file intact" "$(md5sum </tmp/web.out | cut -d' ' -f1)" "$SUM"
within_pct "$rateh" 90 105 $LIMIT || fail "lighttpd: $rateh B/s"
# An event loop told "not writable" sleeps: far less than the whole CPU of a busy loop.
[ "$cpu" -le 300 ] || fail "lighttpd burned $cpu ticks in 6 s while throttled"
# A live change takes effect at once.
skex -s 3 -r 300K
dt=$(xfer_ms /tmp/web.out http://127.0.0.1:8081/big.bin)
rateh2=$((BIG * 1000 / dt))
within_pct "$rateh2" 66 110 307200 || fail "lighttpd after -r 300K: $rateh2 B/s"
skex -X 3
skex -X 1
echo "Table 1 (users:restricted/unrestricted B/s):$table; IPv6 EPSV $rate6; lighttpd $rateh then $rateh2 (cpu $cpu)"

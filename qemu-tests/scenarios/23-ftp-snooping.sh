# suite: solo (measures a rate; sets the module's FTP data timeout for a moment)
# FTP snooping only follows real passive transfers. An output group with --ftp holds
# vsftpd (2021), a web server (lighttpd, 8081) and an echo server (8082); a second
# lighttpd on 2222, same user, stands for sshd. (a) PASV and EPSV transfers join the
# class and are limited. (b) Bytes shaped like a 227/229 reply do not pull 2222 in: a
# file served over HTTP from a member port that starts with "227 Entering Passive Mode
# (127,0,0,1,8,174)", and a client whose bytes an echo server sends back after a PASV of
# its own. (c) With the port flag (skex -a ... --ftp) only the marked port is watched: a
# fake FTP server on an unmarked port announcing 2222 is ignored. (d) A data listener
# nobody connects to leaves after the data timeout (a module parameter, shortened here).
LIMIT=32768
SIZE=65536
vsftpd_on 2021
lighttpd_instances 8081 2222
bg nc -ll -p 8082 -e cat
# A fake FTP server: reads the command in one read (as vsftpd does) and announces 2222.
cat >/tmp/fakeftp.sh <<-'EOF'
	#!/bin/sh
	dd bs=64 count=1 >/dev/null 2>&1
	printf '227 Entering Passive Mode (127,0,0,1,8,174).\r\n'
	sleep 1
EOF
chmod +x /tmp/fakeftp.sh
bg nc -ll -p 8083 -e /tmp/fakeftp.sh
PARAM=/sys/module/openqos/parameters/ftp_data_timeout_ms
trap 'echo 0 >$PARAM; cleanup' EXIT
head -c $SIZE /dev/urandom >/srv/ftp2021/small.bin
SUM=$(md5sum </srv/ftp2021/small.bin | cut -d' ' -f1)
# The bait: 227 pointing at 2222 (8 * 256 + 174), padded so that lighttpd sends it on
# its own (sendfile after the header).
{ printf '227 Entering Passive Mode (127,0,0,1,8,174).\r\n'; head -c $SIZE /dev/zero; } >/srv/www8081/evil.bin
head -c $((SIZE * 4)) /dev/urandom >/srv/www2222/big.bin
cp /srv/ftp2021/small.bin /srv/www2222/small.bin
sleep 0.5

skex -N 1 -t output -r 32K --ftp
for p in 2021 8081 8082; do skex -a 1 -p $p; done
joined() { skex -L -j -g "$1" | qostest json groups.0.ftp_joined; }

# ftp_rate URL [curl options]: downloads URL, checks it, prints the rate (B/s) from the
# first byte to the last.
ftp_rate() {
	url=$1; shift
	ms=$(curl -s -g --max-time 60 "$@" -o /tmp/ftp.out -w '%{time_starttransfer} %{time_total}' "$url" |
		awk '{ printf "%d\n", ($2 - $1) * 1000 + 1 }')
	expect_eq "ftp file intact" "$(md5sum </tmp/ftp.out | cut -d' ' -f1)" "$SUM"
	echo $((SIZE * 1000 / ms))
}

# free_2222: 2222 is not in any class: its download runs far over the limit, and no
# meter counts it.
free_2222() {
	ms=$(curl -s --max-time 60 -o /tmp/b.out -w '%{time_total}' http://127.0.0.1:2222/big.bin |
		awk '{ printf "%d\n", $1 * 1000 + 1 }')
	expect_eq "2222 download ($1)" "$(wc -c </tmp/b.out)" $((SIZE * 4))
	[ $((SIZE * 4 * 1000 / ms)) -gt $((LIMIT * 4)) ] || fail "$1: 2222 limited ($ms ms)"
	netmeter -p 2222 >/dev/null 2>&1 && fail "$1: 2222 is metered"
	true
}

# --- (a) passive transfers join the class. ---
r1=$(ftp_rate ftp://127.0.0.1:2021/small.bin --disable-epsv)
r2=$(ftp_rate ftp://127.0.0.1:2021/small.bin)
expect_eq "data listeners joined (PASV, EPSV)" "$(joined 1)" 2
within_pct "$r1" 40 115 $LIMIT || fail "PASV transfer: $r1 B/s against $LIMIT"
within_pct "$r2" 40 115 $LIMIT || fail "EPSV transfer: $r2 B/s against $LIMIT"
free_2222 "before"

# --- (b) reply-shaped bytes that no PASV/EPSV asked for. ---
curl -s --max-time 60 -o /tmp/evil.out http://127.0.0.1:8081/evil.bin
expect_eq "bait served" "$(head -c 4 /tmp/evil.out)" "227 "
expect_eq "joined after the HTTP bait" "$(joined 1)" 2
free_2222 "HTTP bait"
# An echo server: the client's PASV comes back (that is the one write the PASV arms),
# then its 227 and 229 lines, alone or behind a PASV in one read.
{
	printf 'PASV\r\n'; sleep 0.5
	printf '227 Entering Passive Mode (127,0,0,1,8,174).\r\n'; sleep 0.5
	printf 'EPSV\r\n'; sleep 0.5
	printf '229 Entering Extended Passive Mode (|||2222|)\r\n'; sleep 0.5
	printf '227 Entering Passive Mode (127,0,0,1,8,174).\r\nPASV\r\n'; sleep 0.5
} | nc 127.0.0.1 8082 >/tmp/echo.out
grep -q '^227 Entering' /tmp/echo.out || fail "the echo server did not echo: $(cat /tmp/echo.out)"
expect_eq "joined after the echoed replies" "$(joined 1)" 2
free_2222 "echo"

# --- A real passive reply of a (fake) FTP server on a control port: 2222 joins for one
# data connection, which is limited; the next connection to 2222 is free again. ---
skex -a 1 -p 8083
printf 'PASV\r\n' | nc 127.0.0.1 8083 >/tmp/fake.out
grep -q '^227 ' /tmp/fake.out || fail "fake FTP server: $(cat /tmp/fake.out)"
expect_eq "joined after the fake server's reply" "$(joined 1)" 3
tx0=$(meter_of 8083 tx_bytes)
ms=$(curl -s --max-time 60 -o /tmp/s.out -w '%{time_starttransfer} %{time_total}' http://127.0.0.1:2222/small.bin |
	awk '{ printf "%d\n", ($2 - $1) * 1000 + 1 }')
expect_eq "2222 data download intact" "$(md5sum </tmp/s.out | cut -d' ' -f1)" "$SUM"
r3=$((SIZE * 1000 / ms))
within_pct "$r3" 0 115 $LIMIT || fail "the data connection to 2222 was not limited: $r3 B/s"
[ $(($(meter_of 8083 tx_bytes) - tx0)) -ge $SIZE ] || fail "8083's meter did not count the data connection"
free_2222 "after its data connection"
skex -d 1 -p 8083

# --- (c) Port flags: only 2021 is an FTP control port of group 2. ---
skex -X 1
skex -N 2 -t output -r 32K
skex -a 2 -p 2021 --ftp
skex -a 2 -p 8083
skex -L -g 2 | grep -q 'port  2021  ftp' || fail "skex -L does not show 2021's flag: $(skex -L -g 2)"
printf 'PASV\r\n' | nc 127.0.0.1 8083 >/tmp/fake.out
grep -q '^227 ' /tmp/fake.out || fail "fake FTP server: $(cat /tmp/fake.out)"
expect_eq "joined through an unmarked port" "$(joined 2)" 0
free_2222 "unmarked port"
out=$(qostest ftp --to 127.0.0.1:2021 --file small.bin)
expect_eq "joined through the marked port" "$(joined 2)" 1
r4=$((SIZE * 1000 / ($(load_field "$out" ms) + 1)))
within_pct "$r4" 40 115 $LIMIT || fail "marked port: $r4 B/s against $LIMIT"

# --- (d) A data listener nobody connects to leaves after the data timeout. ---
echo 1500 >$PARAM
out=$(qostest ftp --to 127.0.0.1:2021 --file small.bin --wait-ms 3500)
expect_eq "joined before the timeout" "$(joined 2)" 2
expect_eq "late download" "$(load_field "$out" bytes)" $SIZE
r5=$((SIZE * 1000 / ($(load_field "$out" ms) + 1)))
[ "$r5" -gt $((LIMIT * 4)) ] || fail "the data listener was still in the group after the timeout: $r5 B/s"
echo 0 >$PARAM
skex -X 2
echo "(a) PASV $r1, EPSV $r2 B/s; (b) HTTP bait, echoed replies: none joined; fake server's 2222: one connection at $r3 B/s, then free; (c) marked port $r4 B/s, unmarked ignored; (d) after the timeout $r5 B/s"

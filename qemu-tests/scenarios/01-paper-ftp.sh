# suite-cost: 65 (seconds in the pool on the debug kernel: started early)
# The paper's address example, verbatim, with two unmodified vsftpd instances:
# FTP clients from 128.143/16 and 128.141/16 go to 2021, everyone else to 1021.
add_client_addrs 128.143.1.1/32 128.141.7.7/32 10.9.9.9/32
for p in 1021 2021; do
	vsftpd_on $p
	echo "served-by-$p" >/srv/ftp$p/who.txt
done
sleep 0.5
tcpchains -A a -p 21 -o 1021
tcpchains -a a -p 21 -i 128.143.0.0 -m 255.255.0.0 -r 2021
tcpchains -a a -p 21 -i 128.141.0.0 -m 255.255.0.0 -r 2021
fetch() { curl -s --max-time 60 --interface "$1" ftp://127.0.0.1:21/who.txt; }
# Three rounds of the four clients (two on the debug kernel: each FTP session forks a
# vsftpd and costs seconds there).
R=$(heavy 3 2)
for i in $(seq 1 "$R"); do
	expect_eq "128.143.1.1" "$(fetch 128.143.1.1)" served-by-2021
	expect_eq "128.141.7.7" "$(fetch 128.141.7.7)" served-by-2021
	expect_eq "10.9.9.9" "$(fetch 10.9.9.9)" served-by-1021
	expect_eq "127.0.0.1" "$(fetch 127.0.0.1)" served-by-1021
done
tcpchains -L
expect_eq forwarded "$(stat_of 21 forwarded)" $((4 * R))
expect_eq default-hits "$(stat_of 21 default_hits)" $((2 * R))
tcpchains -L -p 21 | grep -q "128.143.0.0/16 .*-> 2021 .*hits $R" || fail "hit counter of condition 1"
echo "$((4 * R)) FTP sessions classified by source subnet"

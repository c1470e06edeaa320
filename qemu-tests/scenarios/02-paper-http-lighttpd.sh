# suite-cost: 60 (seconds in the pool on the debug kernel: started early)
# The same address rule in front of two unmodified lighttpd instances.
add_client_addrs 128.143.2.2/32 10.1.1.1/32
lighttpd_instances 8080 8081
tcpchains -A a -p 80 -o 8080
tcpchains -a a -p 80 -i 128.143.0.0 -m 255.255.0.0 -r 8081
get() { curl -s --max-time 60 --interface "$1" http://127.0.0.1:80/; }
R=$(heavy 10 5)
for i in $(seq 1 "$R"); do
	expect_eq premium "$(get 128.143.2.2)" web-8081
	expect_eq basic "$(get 10.1.1.1)" web-8080
done
expect_eq forwarded "$(stat_of 80 forwarded)" $((2 * R))
echo "$((2 * R)) HTTP requests to unmodified lighttpd classified"

# The paper's Figure 6 (with Figure 3's situation as a phase), time compressed: the
# figure's periods are 2 s, qosmgr's 1 s. Two unmodified Apache instances serve a
# CPU-bound CGI: premium on 8080 with 3 workers, basic on 8081 with 15 (the basic class
# is the larger community and, left alone, takes most of the CPU). A content rule on
# port 80 sends requests for Host "premium" to 8080 and the rest to 8081; httperf
# drives premium (11/s: more than its instance gets beside an unthrottled basic class,
# less than it serves alone, and enough above the balance that the set point lies
# inside the actuator's range) and basic (80/s) clients open-loop. An accept-rate group
# on 8081 is qosmgr's actuator; the loop holds the premium queue's delay (measure =
# "oldest": how long the head of the premium accept queue has waited, read from the
# meter), and the CSV records the premium connections' real mean delay, the target's
# measure.
# Phases (exp.lib's closed_loop): basic held at 1/s, basic unlimited, qosmgr identify
# and design (settling in 10 of its periods), then qosmgr holding the premium delay at
# 2 s, through a premium load step (+33 %) and a doubling of the basic load. One "EXP"
# CSV line per period.
# plot-title: premium delay held by qosmgr
# qosmgr's period (ms), its design's settling time (its periods, or auto: the least
# spread) and overshoot, its measure, the window (its periods) of the accept interval
# that measure adds half of, and no slew limit (the output's range bounds it; the
# design counts on its linear response): before exp.lib, which defaults them.
CTRL_MS=${CTRL_MS:-500}
SETTLING=${SETTLING:-auto}
OVERSHOOT=${OVERSHOOT:-0}
MEASURE=${MEASURE:-oldest}
RATE_PERIODS=${RATE_PERIODS:-4}
SLEW=${SLEW:-none}
. /qemu-tests/experiments/web.lib

PREMIUM_RATE=${PREMIUM_RATE:-12}
BASIC_RATE=${BASIC_RATE:-80}
SP=${SET_POINT_MS:-2000}
# The premium queue integrates arrivals minus service near the set point: identify the
# integrating model (a = 1) rather than fit a free a to relay data that touch its floor.
IDENT_OPTS=${IDENT_OPTS:---integrating}
apache_on 8080 3
apache_on 8081 15
sleep 1
tcpchains -A c -p 80 -o 8081
tcpchains -a c -p 80 -s "Host: premium" -r 8080
skex -N 2 -t rate -r 200 -b 2
skex -a 2 -p 8081
PPORT=8080 BPORT=8081 GROUP=2

apache_diag() { for d in /tmp/apache-*; do diag tail -n 3 "$d/error.log"; done; }
closed_loop 80 apache_diag

# The paper's Figure 8, time compressed (periods of 4 s; run 8's settings, see
# Documentation/experiments/README.md): xinetd starts unmodified
# dovecot IMAP servers on 1143 (server 1) and 2143 (server 2); an address rule on 143
# sends premium clients (10.1.0.0/16) to 1143 and everyone else to 2143. Open-loop IMAP
# sessions as in fig7. An accept-rate group on 2143 is qosmgr's actuator; the loop holds
# the premium queue's delay at 2 s. Premium arrives at 3/s: more than xinetd takes from
# its listener beside an unthrottled basic class, less than it takes alone (at 2/s the
# premium delay never passes 2 s: xinetd takes one connection per ready listener each
# round), and low enough that with basic at its floor the premium step (+33 %) fits. Phases (exp.lib's closed_loop): basic held at 1/s,
# basic unlimited, qosmgr identify and design, then qosmgr holding the set point through
# a premium load step (+33 %) and a doubling of the basic load. One "EXP" CSV line per
# period.
# plot-title: IMAP, premium delay held by qosmgr
# The figure's periods are 4 s: an IMAP session runs for seconds after it is accepted,
# and a period should hold enough sessions to measure.
PERIOD=${PERIOD:-4}
# qosmgr's period 1 s, the oldest waiting session's wait (plus half the interval
# between accepts over 4 periods), settling auto (the least spread), no overshoot; the
# relay between 1/s and 3/s, around the plant's balance.
CTRL_MS=${CTRL_MS:-1000}
MEASURE=${MEASURE:-oldest}
RATE_PERIODS=${RATE_PERIODS:-4}
SETTLING=${SETTLING:-auto}
OVERSHOOT=${OVERSHOOT:-0}
IDENT_LOW=${IDENT_LOW:-1}
IDENT_HIGH=${IDENT_HIGH:-3}
IDENT_OPTS=${IDENT_OPTS:---integrating}
. /qemu-tests/experiments/mail.lib

PREMIUM_RATE=${PREMIUM_RATE:-3}
BASIC_RATE=${BASIC_RATE:-6}
SP=${SET_POINT_MS:-2000}
xinetd_on 1143 2143
tcpchains -A a -p 143 -o 2143
tcpchains -a a -p 143 -i 10.1.0.0 -m 255.255.0.0 -r 1143
skex -N 2 -t rate -r 200 -b 2
skex -a 2 -p 2143
PPORT=1143 BPORT=2143 GROUP=2
closed_loop 143 mail_diag

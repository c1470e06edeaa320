# The paper's Figure 8, time compressed (periods of 2 s): xinetd starts unmodified
# dovecot IMAP servers on 1143 (server 1) and 2143 (server 2); an address rule on 143
# sends premium clients (10.1.0.0/16) to 1143 and everyone else to 2143. Open-loop IMAP
# sessions as in fig7. An accept-rate group on 2143 is qosmgr's actuator; the loop holds
# the premium queue's delay at 2 s. Premium arrives at 4/s: more than xinetd takes from
# its listener beside an unthrottled basic class, less than it takes alone (at 2/s the
# premium delay never passes 2 s: xinetd takes one connection per ready listener each
# round). Phases (exp.lib's closed_loop): basic held at 1/s,
# basic unlimited, qosmgr identify and design, then qosmgr holding the set point through
# a premium load step (+33 %) and a doubling of the basic load. One "EXP" CSV line per
# period.
# plot-title: IMAP, premium delay held by qosmgr
# Periods of 4 s: an IMAP session runs for seconds after it is accepted, so the premium
# delay answers a change of the basic rate 8-12 s late, which 2 s periods cannot fit
# (qosmgr's dead time is at most 3 periods).
PERIOD=${PERIOD:-4}
. /qemu-tests/experiments/mail.lib

PREMIUM_RATE=${PREMIUM_RATE:-4}
BASIC_RATE=${BASIC_RATE:-6}
SP=${SET_POINT_MS:-2000}
xinetd_on 1143 2143
tcpchains -A a -p 143 -o 2143
tcpchains -a a -p 143 -i 10.1.0.0 -m 255.255.0.0 -r 1143
skex -N 2 -t rate -r 200 -b 2
skex -a 2 -p 2143
PPORT=1143 BPORT=2143 GROUP=2
closed_loop 143 mail_diag

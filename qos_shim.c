// SPDX-License-Identifier: GPL-2.0
/*
 * openqos: C glue for kernel facilities that Rust cannot reach.
 *
 * Everything here is a static inline, a macro, or a field of a structure that
 * kernel::bindings only knows as opaque (struct sock, request_sock, the accept
 * queue). The policy (which port a connection goes to, when to refuse it) lives in
 * Rust; this file only performs the operations, each one under the locks the TCP
 * stack itself uses for it. See Documentation/design.md.
 */

#include <linux/kmemleak.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/netlink.h>
#include <linux/poll.h>
#include <linux/sched/debug.h>
#include <linux/stacktrace.h>
#include <linux/timekeeping.h>
#include <linux/uio.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <linux/sched/signal.h>
#include <net/inet_common.h>
#include <net/inet_connection_sock.h>
#include <net/inet_hashtables.h>
#include <net/inet6_hashtables.h>
#include <net/ipv6.h>
#include <net/netns/generic.h>
#include <net/request_sock.h>
#include <linux/sock_diag.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "qos_shim.h"

/*
 * sock_def_readable() is not exported. Every listener openqos hooks is a socket it
 * created itself, so its sk_data_ready is the protocol default; save that pointer the
 * first time and use it to restore listeners and the children that inherit our hook.
 */
static void (*oq_default_data_ready)(struct sock *sk);

void oq_sk_install_hook(struct sock *sk, void *ctx, void (*hook)(struct sock *))
{
	write_lock_bh(&sk->sk_callback_lock);
	if (!READ_ONCE(oq_default_data_ready))
		WRITE_ONCE(oq_default_data_ready, sk->sk_data_ready);
	/*
	 * No NOCOPY: children cloned from this listener inherit both the hook and @ctx, so
	 * the hook can tell, for a child, which listener it is waiting in. Both are taken
	 * off the child (oq_sk_reset_callback) before it leaves that listener's queue.
	 */
	rcu_assign_sk_user_data(sk, ctx);
	WRITE_ONCE(sk->sk_data_ready, hook);
	write_unlock_bh(&sk->sk_callback_lock);
}

/* Put the default callback back on child @sk, and clear the context, if it has @hook. */
static void oq_sk_reset_callback(struct sock *sk, void (*hook)(struct sock *))
{
	write_lock_bh(&sk->sk_callback_lock);
	if (READ_ONCE(sk->sk_data_ready) == hook) {
		WRITE_ONCE(sk->sk_data_ready, READ_ONCE(oq_default_data_ready));
		rcu_assign_sk_user_data(sk, NULL);
	}
	write_unlock_bh(&sk->sk_callback_lock);
}

void oq_sk_restore_hook(struct sock *sk, void (*hook)(struct sock *))
{
	write_lock_bh(&sk->sk_callback_lock);
	if (READ_ONCE(sk->sk_data_ready) == hook)
		WRITE_ONCE(sk->sk_data_ready, READ_ONCE(oq_default_data_ready));
	rcu_assign_sk_user_data(sk, NULL);
	write_unlock_bh(&sk->sk_callback_lock);
}

void *oq_sk_hook_ctx(struct sock *sk)
{
	return rcu_dereference_sk_user_data(sk);
}

bool oq_sk_is_listener(const struct sock *sk)
{
	return READ_ONCE(sk->sk_state) == TCP_LISTEN;
}

void oq_child_default_ready(struct sock *child)
{
	void (*def)(struct sock *) = READ_ONCE(oq_default_data_ready);

	if (def)
		def(child);
}

void oq_child_data_ready(struct sock *child, void (*hook)(struct sock *))
{
	oq_sk_reset_callback(child, hook);
	oq_child_default_ready(child);
}

u32 oq_sk_ack_backlog(const struct sock *sk)
{
	return READ_ONCE(sk->sk_ack_backlog);
}

/*
 * How long the connection at the head of listener @lsk's accept queue has waited, in
 * nanoseconds (0 if none waits): from the end of its handshake, on the clock of
 * oq_accept_delay_ns(), so it is the delay the next accept() of the queue would count.
 * The queue's lock keeps the head's child alive while its stamp is read.
 */
u64 oq_queue_oldest_ns(struct sock *lsk)
{
	struct request_sock_queue *q = &inet_csk(lsk)->icsk_accept_queue;
	struct request_sock *req;
	u32 d = 0;

	spin_lock_bh(&q->rskq_lock);
	req = q->rskq_accept_head;
	if (req && req->sk)
		d = tcp_jiffies32 - READ_ONCE(tcp_sk(req->sk)->lsndtime);
	spin_unlock_bh(&q->rskq_lock);
	return jiffies_to_nsecs(d);
}

/*
 * Milliseconds since the handshake of @req: since its first SYN-ACK (tcp_make_synack
 * stamps it with tcp_clock_ns()), or for a SYN-cookie child, which has no such stamp,
 * since the child last received a segment (the handshake's ACK, for a silent client).
 */
static u32 oq_req_age_ms(const struct request_sock *req)
{
	u64 then = tcp_rsk(req)->snt_synack, now = tcp_clock_us();

	if (!then)
		then = READ_ONCE(tcp_sk(req->sk)->tcp_mstamp);
	if (now <= then)
		return 0;
	return min_t(u64, div_u64(now - then, USEC_PER_MSEC), U32_MAX);
}

void oq_child_peer(const struct sock *child, struct oq_peer *peer)
{
	memset(peer, 0, sizeof(*peer));
	peer->family = child->sk_family;
	peer->rport = ntohs(child->sk_dport);
	peer->lport = child->sk_num;
	if (child->sk_family == AF_INET) {
		memcpy(peer->raddr, &child->sk_daddr, 4);
		memcpy(peer->laddr, &child->sk_rcv_saddr, 4);
	}
#if IS_ENABLED(CONFIG_IPV6)
	else {
		memcpy(peer->raddr, &child->sk_v6_daddr, 16);
		memcpy(peer->laddr, &child->sk_v6_rcv_saddr, 16);
	}
#endif
}

struct request_sock *oq_queue_head(struct sock *lsk, struct oq_peer *peer,
				   void (*hook)(struct sock *), bool release)
{
	struct request_sock_queue *q = &inet_csk(lsk)->icsk_accept_queue;
	struct request_sock *req;

	spin_lock_bh(&q->rskq_lock);
	req = q->rskq_accept_head;
	if (req) {
		oq_child_peer(req->sk, peer);
		peer->age_ms = oq_req_age_ms(req);
		peer->child = req->sk;
		/*
		 * @release: the child leaves this queue next (moved, or accepted and reset
		 * by us): drop the inherited hook now, while the queue lock keeps the child
		 * alive, so no pointer into this module survives it. Otherwise the child
		 * keeps the hook until it is moved (oq_move_locked) or the listener closes.
		 */
		if (release)
			oq_sk_reset_callback(req->sk, hook);
	}
	spin_unlock_bh(&q->rskq_lock);
	return req;
}

/*
 * Moves child @child, which must not be the head, to the head of @lsk's queue. Only the
 * listener's single drainer may call this: it is the only context that removes or adds
 * a queue's head, so the head it then sees is the one it put there.
 */
bool oq_queue_promote(struct sock *lsk, struct sock *child)
{
	struct request_sock_queue *q = &inet_csk(lsk)->icsk_accept_queue;
	struct request_sock *req, *prev = NULL;

	spin_lock_bh(&q->rskq_lock);
	for (req = q->rskq_accept_head; req && req->sk != child; req = req->dl_next)
		prev = req;
	if (req && prev) {
		prev->dl_next = req->dl_next;
		if (q->rskq_accept_tail == req)
			q->rskq_accept_tail = prev;
		req->dl_next = q->rskq_accept_head;
		WRITE_ONCE(q->rskq_accept_head, req);
	}
	spin_unlock_bh(&q->rskq_lock);
	return req != NULL;
}

/*
 * Feeds the bytes from @skip up to @max of the data @child has received (in order, none
 * consumed: offsets count from its first byte) to @feed, in chunks, until @feed returns
 * false. Returns OQ_PEEK_* flags. The caller holds
 * the child's socket spinlock, which is what serializes its receive queue (TCP appends
 * to it under bh_lock_sock, not under the queue's own lock), and nobody owns the child:
 * it is in a module listener's accept queue, so no process has it.
 */
static int oq_peek_locked(struct sock *child, u32 skip, u32 max,
			  bool (*feed)(void *ctx, const u8 *data, u32 len), void *ctx)
{
	u8 buf[OQ_PEEK_CHUNK];
	struct sk_buff *skb;
	u32 seen = 0;
	int ret = 0;

	if (READ_ONCE(child->sk_shutdown) & RCV_SHUTDOWN)
		ret |= OQ_PEEK_FIN;
	skb_queue_walk(&child->sk_receive_queue, skb) {
		u32 off = 0;

		if (TCP_SKB_CB(skb)->tcp_flags & TCPHDR_FIN)
			ret |= OQ_PEEK_FIN;
		/* Bytes scanned by an earlier look are skipped, not copied. */
		if (seen < skip) {
			off = min(skip - seen, skb->len);
			seen += off;
		}
		while (off < skb->len) {
			u32 n = min3(skb->len - off, max - seen, (u32)sizeof(buf));

			if (!n)
				return ret | OQ_PEEK_FULL;
			if (skb_copy_bits(skb, off, buf, n))
				return ret | OQ_PEEK_FULL;
			off += n;
			seen += n;
			if (!feed(ctx, buf, n))
				return ret | OQ_PEEK_STOP;
		}
	}
	return seen >= max ? ret | OQ_PEEK_FULL : ret;
}

/* oq_peek_locked() for a child whose socket spinlock the caller holds. */
int oq_child_peek(struct sock *child, u32 skip, u32 max,
		  bool (*feed)(void *ctx, const u8 *data, u32 len), void *ctx)
{
	lockdep_assert_held(&child->sk_lock.slock);
	return oq_peek_locked(child, skip, max, feed, ctx);
}

/*
 * oq_peek_locked() for the head of a module listener's queue, from process context by
 * its drainer: the child cannot leave the queue meanwhile (only the drainer removes the
 * head), so it stays allocated. Returns OQ_PEEK_BUSY if a process owns the child, which
 * cannot happen before it is accepted, but is checked rather than assumed.
 */
int oq_head_peek(struct sock *child, u32 skip, u32 max,
		 bool (*feed)(void *ctx, const u8 *data, u32 len), void *ctx)
{
	int ret = OQ_PEEK_BUSY;

	/*
	 * Process context, but not necessarily sleepable (the caller may hold an RCU read
	 * lock): what matters is that this CPU holds no child's spinlock, which softirq
	 * callers (the hooks) may.
	 */
	WARN_ON_ONCE(in_interrupt());
	local_bh_disable();
	bh_lock_sock(child);
	if (!sock_owned_by_user_nocheck(child))
		ret = oq_peek_locked(child, skip, max, feed, ctx);
	bh_unlock_sock(child);
	local_bh_enable();
	return ret;
}

/*
 * The cookie of @sk: a number the kernel gives no other socket (the one sock_diag and
 * BPF report), made on first use. @sk must be valid; any context.
 */
u64 oq_sock_cookie(struct sock *sk)
{
	u32 c[2];

	sock_diag_save_cookie(sk, c);
	return (u64)c[1] << 32 | c[0];
}

void oq_queue_reset_children(struct sock *lsk, void (*hook)(struct sock *))
{
	struct request_sock_queue *q = &inet_csk(lsk)->icsk_accept_queue;
	struct request_sock *req;

	spin_lock_bh(&q->rskq_lock);
	for (req = q->rskq_accept_head; req; req = req->dl_next)
		oq_sk_reset_callback(req->sk, hook);
	spin_unlock_bh(&q->rskq_lock);
}

struct sock *oq_lookup_listener(const struct sock *src, const struct oq_peer *peer, u16 port)
{
	struct net *net = sock_net(src);
	struct sock *sk = NULL;

	if (peer->family == AF_INET) {
		__be32 saddr, daddr;

		memcpy(&saddr, peer->raddr, 4);
		memcpy(&daddr, peer->laddr, 4);
		sk = __inet_lookup_listener(net, NULL, 0, saddr, htons(peer->rport), daddr,
					    port, 0, 0);
	}
#if IS_ENABLED(CONFIG_IPV6)
	else {
		sk = inet6_lookup_listener(net, NULL, 0, (const struct in6_addr *)peer->raddr,
					   htons(peer->rport),
					   (const struct in6_addr *)peer->laddr, port, 0, 0);
	}
#endif
	return IS_ERR_OR_NULL(sk) ? NULL : sk;
}

/*
 * A child of a kernel socket holds no reference on its network namespace (only a
 * passive one). It stays so while it moves between the module's own listeners (kernel
 * sockets, which hold none either: a rule's, a park or refusal listener of a prioritized
 * port), so that connections the module holds never keep a dying namespace alive; its
 * pernet exit closes those listeners and resets them. Before it is handed to a server
 * (a listener that holds a reference, sk_net_refcnt), make it an ordinary refcounted socket,
 * like sk_net_refcnt_upgrade() does; that helper allocates with GFP_KERNEL and so cannot
 * be called here. Returns false if the namespace is already being dismantled.
 *
 * Called with the source queue lock held: the child is on that queue, owned by nobody,
 * and the listener it came from holds its own passive reference on @net, so dropping the
 * child's passive reference can never release the last one.
 */
static bool oq_child_take_netref(struct sock *child)
{
	struct net *net = sock_net(child);

	if (child->sk_net_refcnt)
		return true;
	if (!maybe_get_net(net))
		return false;
	__netns_tracker_free(net, &child->ns_tracker, false);
#ifdef CONFIG_NET_NS
	refcount_dec(&net->passive);
#endif
	child->sk_net_refcnt = 1;
	netns_tracker_alloc(net, &child->ns_tracker, GFP_ATOMIC);
	sock_inuse_add(net, 1);
	return true;
}

/*
 * Gives @child, leaving the module for listener @dst, what it would have taken from @dst
 * had the client connected to @dst's port (sk_clone() and inet_csk_clone_lock() copy
 * them from the listener): its owner's uid (sk_uid: /proc/net/tcp, sock_diag, uid
 * routing rules) and its mark (inet_request_mark(): the listener's SO_MARK, or with
 * tcp_fwmark_accept and no listener mark the SYN's mark, which @child already has, as
 * our listener's mark is 0). Both are read locklessly everywhere (READ_ONCE), so they
 * are written with WRITE_ONCE without the child's socket lock. sk_priority needs
 * nothing: sk_clone() zeroes it for every child. The route cached at the handshake was
 * looked up with our listener's uid and mark: if either changes, it is dropped
 * (sk_dst_reset() may be called without the socket lock) and the next transmit looks it
 * up again with the new ones.
 *
 * What is not changed, and why (Documentation/design.md, "Identity of a moved
 * connection"): sk_kern_sock is a bit field whose byte other bits share, written only
 * under the child's socket lock, which cannot be taken here (the TCP receive path takes
 * a child's lock before an accept queue's lock; we hold two queue locks); the LSM blob
 * (security_inet_csk_clone() labelled it from the request at the handshake; there is
 * no hook to label it again, and calling security_sk_clone() again would leak or mix
 * blobs); the cgroup data (cgroup_sk_clone() and cgroup_sk_free() are not exported).
 * The memory cgroup is charged at accept() (__inet_accept()), by the accepting task, as
 * for any connection.
 */
static void oq_take_identity(struct sock *child, const struct sock *dst)
{
	kuid_t uid = sk_uid(dst);
	u32 mark = READ_ONCE(dst->sk_mark);
	bool changed = false;

	if (!uid_eq(uid, sk_uid(child))) {
		WRITE_ONCE(child->sk_uid, uid);
		changed = true;
	}
	if (mark && mark != READ_ONCE(child->sk_mark)) {
		WRITE_ONCE(child->sk_mark, mark);
		changed = true;
	}
	if (changed)
		sk_dst_reset(child);
}

/*
 * Moves @req (after @prev in @src's queue, or the head if @prev is NULL) to the tail of
 * @dst's queue. Called with both queue locks held, after the checks of oq_move(). With
 * @ctx, @dst is a module listener whose hook context is @ctx: the child keeps our hook
 * and now points at @ctx, so its data reaches @dst's rule. Otherwise it leaves the module
 * and no callback or context of ours may go with it.
 */
static void oq_move_locked(struct sock *src, struct request_sock *prev,
			   struct request_sock *req, struct sock *dst,
			   void (*hook)(struct sock *), void *ctx)
{
	struct request_sock_queue *sq = &inet_csk(src)->icsk_accept_queue;
	struct request_sock_queue *dq = &inet_csk(dst)->icsk_accept_queue;
	struct sock *child = req->sk;

	if (ctx) {
		write_lock_bh(&child->sk_callback_lock);
		rcu_assign_sk_user_data(child, ctx);
		WRITE_ONCE(child->sk_data_ready, hook);
		write_unlock_bh(&child->sk_callback_lock);
	} else {
		oq_sk_reset_callback(child, hook);
		oq_take_identity(child, dst);
	}

	if (prev)
		prev->dl_next = req->dl_next;
	else
		WRITE_ONCE(sq->rskq_accept_head, req->dl_next);
	if (sq->rskq_accept_tail == req)
		sq->rskq_accept_tail = prev;
	sk_acceptq_removed(src);

	/* req->rsk_listener keeps pointing at (and holding) our listener. */
	req->dl_next = NULL;
	if (!dq->rskq_accept_head)
		WRITE_ONCE(dq->rskq_accept_head, req);
	else
		dq->rskq_accept_tail->dl_next = req;
	dq->rskq_accept_tail = req;
	sk_acceptq_added(dst);
}

/*
 * The hook context of @dst if it is a module listener (its sk_data_ready is @hook), else
 * NULL. Called inside an RCU read section with @dst's queue lock held: a module listener
 * that is closing unhooks itself, waits for a grace period and only then unhooks the
 * children in its queue (under that lock), so a child handed over here is found there.
 */
static void *oq_module_ctx(struct sock *dst, void (*hook)(struct sock *))
{
	if (READ_ONCE(dst->sk_data_ready) != hook)
		return NULL;
	return rcu_dereference_sk_user_data(dst);
}

/*
 * Moves a connection from module listener @src to listener @dst: the head @req of the
 * queue if @child is NULL, else the child @child provided it is not the head (the head
 * belongs to the listener's drainer). With @hand_over, and if @dst is a module listener,
 * the child keeps our hook and joins @dst's rule (OQ_MOVE_HANDED): the caller holds the
 * child's socket spinlock, which serializes this with the child's own hook, and then
 * delivers the data the child already has to @dst's rule.
 */
static int oq_move(struct sock *src, struct request_sock *req, struct sock *child,
		   struct sock *dst, void (*hook)(struct sock *), bool hand_over, bool head_ok)
{
	struct request_sock_queue *sq = &inet_csk(src)->icsk_accept_queue;
	struct request_sock_queue *dq = &inet_csk(dst)->icsk_accept_queue;
	struct request_sock_queue *first = sq < dq ? sq : dq;
	struct request_sock_queue *second = sq < dq ? dq : sq;
	struct request_sock *prev = NULL;
	void *ctx = NULL;
	int err = 0;

	if (src == dst)
		return OQ_MOVE_LOOP;
	if (dst->sk_family != src->sk_family || dst->sk_protocol != IPPROTO_TCP ||
	    dst->sk_type != SOCK_STREAM || !net_eq(sock_net(src), sock_net(dst)))
		return OQ_MOVE_FAMILY;

	/* Both queue locks share one lockdep class: order by address, nest the second. */
	spin_lock_bh(&first->rskq_lock);
	spin_lock_nested(&second->rskq_lock, SINGLE_DEPTH_NESTING);

	if (child) {
		/* Bounded: a content rule keeps at most MAX_PENDING children queued. */
		for (req = sq->rskq_accept_head; req && req->sk != child; req = req->dl_next)
			prev = req;
		if (!req)
			err = OQ_MOVE_RACE;
		else if (!prev && !head_ok)
			err = OQ_MOVE_HEAD;
	} else if (sq->rskq_accept_head != req) {
		err = OQ_MOVE_RACE;
	}
	if (err)
		;
	else if (READ_ONCE(src->sk_state) != TCP_LISTEN || READ_ONCE(dst->sk_state) != TCP_LISTEN)
		err = OQ_MOVE_NOT_LISTENING;
	else if (tcp_rsk(req)->tfo_listener)
		err = OQ_MOVE_FASTOPEN;
#if IS_ENABLED(CONFIG_IPV6)
	else if (src->sk_family == AF_INET6 && dst->sk_ipv6only &&
		 ipv6_addr_v4mapped(&req->sk->sk_v6_daddr))
		err = OQ_MOVE_FAMILY;
#endif
	else if (sk_acceptq_is_full(dst))
		err = OQ_MOVE_FULL;
	else if (dst->sk_net_refcnt && !oq_child_take_netref(req->sk))
		err = OQ_MOVE_NETNS;

	if (!err) {
		if (hand_over) {
			lockdep_assert_held(&req->sk->sk_lock.slock);
			ctx = oq_module_ctx(dst, hook);
		}
		oq_move_locked(src, prev, req, dst, hook, ctx);
	}

	spin_unlock(&second->rskq_lock);
	spin_unlock_bh(&first->rskq_lock);

	if (err)
		return err;
	/* Wake accept(), poll and epoll waiters of the target (upstream 3864c6ba1e04). */
	READ_ONCE(dst->sk_data_ready)(dst);
	return ctx ? OQ_MOVE_HANDED : OQ_MOVE_OK;
}

int oq_move_head(struct sock *src, struct request_sock *req, struct sock *dst,
		 void (*hook)(struct sock *), bool hand_over)
{
	return oq_move(src, req, NULL, dst, hook, hand_over, false);
}

int oq_move_child(struct sock *src, struct sock *child, struct sock *dst,
		  void (*hook)(struct sock *), bool hand_over)
{
	return oq_move(src, NULL, child, dst, hook, hand_over, false);
}

/*
 * Prioritized queues (qos_prio.rs). A park is a listening kernel socket whose accept
 * queue holds the connections of one class of a prioritized port until they are
 * released into the server's queue. It listens on an ephemeral port and is then taken
 * out of the listening hash (oq_park_unhash), so no SYN and no lookup can reach it:
 * connections only enter it through oq_move(). Nobody accepts from a park, so it has no
 * drainer whose head must stay put: any context may move any of its connections, each
 * move checking under both queue locks that the connection is still there.
 */

/* Takes listener @sk out of the listening hash; it keeps its queue and its state. */
void oq_park_unhash(struct sock *sk)
{
	sk->sk_prot->unhash(sk);
}

/*
 * The head (@tail false) or the tail of park @lsk's queue, with the child's addresses
 * and age in @peer; NULL if the queue is empty. The request is only a token for
 * oq_park_move(): it may leave the queue as soon as the lock is dropped.
 */
struct request_sock *oq_park_peek(struct sock *lsk, bool tail, struct oq_peer *peer)
{
	struct request_sock_queue *q = &inet_csk(lsk)->icsk_accept_queue;
	struct request_sock *req;

	spin_lock_bh(&q->rskq_lock);
	req = tail ? q->rskq_accept_tail : q->rskq_accept_head;
	if (req) {
		oq_child_peer(req->sk, peer);
		peer->age_ms = oq_req_age_ms(req);
		peer->child = req->sk;
	}
	spin_unlock_bh(&q->rskq_lock);
	return req;
}

/*
 * Moves connection @child from park @src (head or not) to listener @dst, which is a
 * server's listener or another park: OQ_MOVE_RACE if it is no longer in @src. The walk
 * to find it is bounded by the park's cap (MAX_PRIO_HELD).
 */
int oq_park_move(struct sock *src, struct sock *child, struct sock *dst)
{
	return oq_move(src, NULL, child, dst, NULL, false, true);
}

void *oq_sk_module_ctx(struct sock *sk, void (*hook)(struct sock *))
{
	return oq_module_ctx(sk, hook);
}

/*
 * Locks child @child, the head of a module listener's queue, from process context, and
 * takes a reference: once it is moved on, the child may be accepted and closed by
 * someone else while we still hold its lock. Returns false (nothing held) if a process
 * owns it, which cannot happen before it is accepted but is checked rather than assumed.
 */
bool oq_child_lock(struct sock *child)
{
	/*
	 * Nothing here sleeps: the drainer calls this inside an RCU read section (it holds
	 * the target listener it looked up). It must not run in softirq, where the TCP
	 * receive path may already hold another child's spinlock on this CPU.
	 */
	WARN_ON_ONCE(in_interrupt());
	sock_hold(child);
	local_bh_disable();
	bh_lock_sock(child);
	if (!sock_owned_by_user_nocheck(child))
		return true;
	bh_unlock_sock(child);
	local_bh_enable();
	sock_put(child);
	return false;
}

void oq_child_unlock(struct sock *child)
{
	bh_unlock_sock(child);
	local_bh_enable();
	sock_put(child);
}

int oq_listen_sock_create(struct net *net, int family, u16 port, bool v6only,
			  struct socket **res)
{
	struct sockaddr_storage ss = {};
	struct socket *sock;
	int len, err;

	err = sock_create_kern(net, family, SOCK_STREAM, IPPROTO_TCP, &sock);
	if (err)
		return err;
	sock_set_reuseaddr(sock->sk);
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		if (v6only)
			ip6_sock_set_v6only(sock->sk);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	}
	err = kernel_bind(sock, (struct sockaddr_unsized *)&ss, len);
	if (err) {
		sock_release(sock);
		return err;
	}
	*res = sock;
	return 0;
}

struct sock *oq_socket_sk(struct socket *sock)
{
	return sock->sk;
}

/*
 * One initializer per kind of work item, so that each kind has a lockdep class of its own
 * (INIT_DELAYED_WORK makes one static key per place it is written). With a single
 * initializer, lockdep took the listeners' work (cancelled with a namespace's mutex held,
 * when a rule goes) and the sensors' rescan (which takes namespace mutexes) for one lock
 * and reported a circular dependency that cannot happen: no listener or group work item
 * takes a namespace's mutex.
 */
/*
 * How many module listeners' hooks are running nested on this CPU. A hook moves a
 * connection into the next listener's queue and calls that listener's sk_data_ready,
 * which is our hook again when the target is another rule (a chain): the nesting is
 * the chain's length, which the rule check bounds only for the final rule set, not for
 * the states a change passes through. BH stays disabled from oq_nest_enter() to
 * oq_nest_exit(), so the task cannot migrate and no softirq on this CPU interleaves
 * (whether the hook was called in softirq, or in process context by the work item's
 * move or by release_sock()'s backlog processing).
 */
static DEFINE_PER_CPU(unsigned int, oq_nest);

/* Enters one more level unless @max are running; BH disabled if it did. */
bool oq_nest_enter(unsigned int max)
{
	local_bh_disable();
	if (__this_cpu_read(oq_nest) >= max) {
		local_bh_enable();
		return false;
	}
	__this_cpu_inc(oq_nest);
	return true;
}

void oq_nest_exit(void)
{
	__this_cpu_dec(oq_nest);
	local_bh_enable();
}

/*
 * The queueing helpers of qos_work.rs's Timer. Each returns true when it took an idle
 * @dw to pending, that is when the caller's reference now belongs to the queued run,
 * and false when @dw was pending already (the caller keeps its reference). The pending
 * bit is what counts: it is set from queueing until the work function starts.
 */

/* Runs @dw as soon as possible, overriding a later deadline. */
bool oq_work_now(struct delayed_work *dw)
{
	return !mod_delayed_work(system_percpu_wq, dw, 0);
}

/*
 * Runs @dw in @ms milliseconds, or sooner if it is already queued for sooner: a queued
 * timer for a later deadline is brought forward (queue_delayed_work alone would keep
 * it, and a head with a shorter timeout than the one queued would wait for the later).
 */
bool oq_work_at(struct delayed_work *dw, u32 ms)
{
	unsigned long delay = msecs_to_jiffies(ms) + 1;
	unsigned long when = jiffies + delay;

	if (queue_delayed_work(system_percpu_wq, dw, delay))
		return true;
	/*
	 * Already pending. The unlocked look at the timer can race with it firing; then
	 * mod_delayed_work queues one more run (and says so), which is harmless.
	 */
	if (timer_pending(&dw->timer) && time_after(READ_ONCE(dw->timer.expires), when))
		return !mod_delayed_work(system_percpu_wq, dw, delay);
	return false;
}

/* Runs @dw in @ms milliseconds, moving it if it is already queued. */
bool oq_work_in(struct delayed_work *dw, u32 ms)
{
	return !mod_delayed_work(system_percpu_wq, dw, msecs_to_jiffies(ms) + 1);
}

void oq_sock_no_linger(struct socket *sock)
{
	sock_no_linger(sock->sk);
}

/* The module's slot in @net's per-namespace array (pernet_operations.id/size). */
void *oq_net_generic(const struct net *net, unsigned int id)
{
	return net_generic(net, id);
}

/* Generic netlink helpers that are static inlines. */

struct net *oq_genl_info_net(const struct genl_info *info)
{
	return genl_info_net(info);
}

/* The attributes of a request: they follow the generic netlink header (the family has no
 * header of its own). */
const void *oq_genl_info_payload(const struct genl_info *info, u32 *len)
{
	*len = genlmsg_len(info->genlhdr);
	return genlmsg_data(info->genlhdr);
}

struct sk_buff *oq_genlmsg_new(size_t payload)
{
	return genlmsg_new(payload, GFP_KERNEL);
}

void oq_genlmsg_end(struct sk_buff *skb, void *hdr)
{
	genlmsg_end(skb, hdr);
}

void oq_genlmsg_cancel(struct sk_buff *skb, void *hdr)
{
	genlmsg_cancel(skb, hdr);
}

int oq_genlmsg_reply(struct sk_buff *skb, struct genl_info *info)
{
	return genlmsg_reply(skb, info);
}

struct net *oq_sock_net(const struct sock *sk)
{
	return sock_net(sk);
}

struct net *oq_cb_net(const struct netlink_callback *cb)
{
	return sock_net(cb->skb->sk);
}

u32 oq_cb_portid(const struct netlink_callback *cb)
{
	return NETLINK_CB(cb->skb).portid;
}

u32 oq_cb_seq(const struct netlink_callback *cb)
{
	return cb->nlh->nlmsg_seq;
}

long *oq_cb_args(struct netlink_callback *cb)
{
	return cb->args;
}

const struct nlattr *oq_cb_attr(struct netlink_callback *cb, int type)
{
	const struct genl_dumpit_info *info = genl_dumpit_info(cb);

	return info->info.attrs ? info->info.attrs[type] : NULL;
}

struct nlattr *oq_nla_nest_start(struct sk_buff *skb, int type)
{
	return nla_nest_start(skb, type);
}

void oq_nla_nest_end(struct sk_buff *skb, struct nlattr *start)
{
	nla_nest_end(skb, start);
}

void oq_nla_nest_cancel(struct sk_buff *skb, struct nlattr *start)
{
	nla_nest_cancel(skb, start);
}

unsigned int oq_skb_len(const struct sk_buff *skb)
{
	return skb->len;
}

const struct genl_family *oq_cb_family(struct netlink_callback *cb)
{
	return genl_dumpit_info(cb)->info.family;
}

struct netlink_ext_ack *oq_cb_extack(struct netlink_callback *cb)
{
	return cb->extack;
}

/* ---- Sensors: wrapped proto_ops of metered sockets (qos_sensor.rs) ---- */

/*
 * Takes a reference on up to @max user listening TCP sockets bound to @port in @net and
 * stores them in @out. The bind hash bucket lock keeps every owner list of the port
 * stable (bind, inherit and unbind all take it).
 */
int oq_port_listeners(struct net *net, u16 port, struct sock **out, int max)
{
	struct inet_hashinfo *h = net->ipv4.tcp_death_row.hashinfo;
	struct inet_bind_hashbucket *head;
	struct inet_bind2_bucket *tb2;
	struct inet_bind_bucket *tb;
	struct sock *sk;
	int n = 0;

	head = &h->bhash[inet_bhashfn(net, port, h->bhash_size)];
	spin_lock_bh(&head->lock);
	inet_bind_bucket_for_each(tb, &head->chain) {
		if (!net_eq(ib_net(tb), net) || tb->port != port)
			continue;
		hlist_for_each_entry(tb2, &tb->bhash2, bhash_node) {
			sk_for_each_bound(sk, &tb2->owners) {
				if (n == max)
					goto out;
				if (READ_ONCE(sk->sk_state) != TCP_LISTEN || sk->sk_kern_sock ||
				    sk->sk_protocol != IPPROTO_TCP)
					continue;
				sock_hold(sk);
				out[n++] = sk;
			}
		}
	}
out:
	spin_unlock_bh(&head->lock);
	return n;
}

void oq_sock_put(struct sock *sk)
{
	sock_put(sk);
}

void oq_sock_hold(struct sock *sk)
{
	sock_hold(sk);
}

/*
 * Makes @rec the user data of @sk and @ops its socket's operations, if the socket is
 * still attached, still has the operations @expect and no user data. The callback lock
 * makes the pair change together: whoever holds it for reading sees either both or
 * neither (oq_sock_record).
 */
bool oq_sock_wrap(struct sock *sk, const struct proto_ops *expect,
		  const struct proto_ops *ops, void *rec)
{
	struct socket *sock;
	bool done = false;

	write_lock_bh(&sk->sk_callback_lock);
	sock = sk->sk_socket;
	if (sock && READ_ONCE(sock->ops) == expect &&
	    !rcu_access_pointer(sk->sk_user_data)) {
		/* NOCOPY: children cloned from a metered listener start without it. */
		__rcu_assign_sk_user_data_with_flags(sk, rec, SK_USER_DATA_NOCOPY);
		WRITE_ONCE(sock->ops, ops);
		done = true;
	}
	write_unlock_bh(&sk->sk_callback_lock);
	return done;
}

/*
 * Takes @rec back from @sk if it is still its user data; with @orig, the socket (if
 * still attached and still with the operations @ours: IPV6_ADDRFORM may have replaced
 * them) gets the operations @orig back. Returns whether @rec was there.
 */
bool oq_sock_unwrap(struct sock *sk, void *rec, const struct proto_ops *ours,
		    const struct proto_ops *orig)
{
	bool found;

	write_lock_bh(&sk->sk_callback_lock);
	found = __locked_read_sk_user_data_with_flags(sk, SK_USER_DATA_NOCOPY) == rec;
	if (found) {
		rcu_assign_sk_user_data(sk, NULL);
		if (orig && sk->sk_socket && READ_ONCE(sk->sk_socket->ops) == ours)
			WRITE_ONCE(sk->sk_socket->ops, orig);
	}
	write_unlock_bh(&sk->sk_callback_lock);
	return found;
}

void oq_sk_read_lock(struct sock *sk)
{
	read_lock_bh(&sk->sk_callback_lock);
}

void oq_sk_read_unlock(struct sock *sk)
{
	read_unlock_bh(&sk->sk_callback_lock);
}

/*
 * The user data of @sock's sock if @sock's operations are @ops (with the callback lock
 * held for reading: then the user data is the record oq_sock_wrap installed).
 */
void *oq_sock_record(struct socket *sock, const struct proto_ops *ops)
{
	struct sock *sk = sock->sk;

	lockdep_assert_held_read(&sk->sk_callback_lock);
	if (READ_ONCE(sock->ops) != ops)
		return NULL;
	return __locked_read_sk_user_data_with_flags(sk, SK_USER_DATA_NOCOPY);
}

void oq_socket_set_ops(struct socket *sock, const struct proto_ops *ops)
{
	WRITE_ONCE(sock->ops, ops);
}

/*
 * Time from the end of @sk's handshake to now. A passive child's lsndtime is set when
 * the handshake completes (tcp_rcv_state_process, TCP_SYN_RECV) and next changes when
 * the server first sends, after accept(); so at accept it is the handshake's end.
 */
u64 oq_accept_delay_ns(const struct sock *sk)
{
	u32 d = tcp_jiffies32 - READ_ONCE(tcp_sk(sk)->lsndtime);

	return jiffies_to_nsecs(d);
}

/*
 * Makes every task sleeping in a socket call on @sk (accept, send, receive, connect:
 * their waits use autoremove_wake_function or woken_wake_function with the task as
 * private) leave it and restart the call: the same as set_notify_signal(), which is not
 * available to modules (wake_up_state is not exported). The task sees signal_pending(),
 * its call returns -ERESTARTSYS (or -EINTR with a socket timeout), and with no signal
 * actually queued, returning to user mode restarts the system call transparently.
 */
void oq_kick_waiters(struct sock *sk)
{
	struct wait_queue_entry *curr, *next;
	struct socket_wq *wq;
	unsigned long flags;

	rcu_read_lock();
	wq = rcu_dereference(sk->sk_wq);
	if (wq) {
		spin_lock_irqsave(&wq->wait.lock, flags);
		list_for_each_entry_safe(curr, next, &wq->wait.head, entry) {
			if (curr->func != autoremove_wake_function &&
			    curr->func != woken_wake_function)
				continue;
			set_tsk_thread_flag(curr->private, TIF_NOTIFY_SIGNAL);
			curr->func(curr, TASK_INTERRUPTIBLE, 0, NULL);
		}
		spin_unlock_irqrestore(&wq->wait.lock, flags);
	}
	rcu_read_unlock();
}

/*
 * A copy of the protocol table @orig in memory of its own (not the module's), for the
 * sensors to put their wrappers in. A socket may point at it for as long as it lives,
 * beyond module unload (see oq_ops_neutralize), so it is never freed once used:
 * kmemleak is told so.
 */
struct proto_ops *oq_ops_alloc(const struct proto_ops *orig)
{
	struct proto_ops *ops = kmemdup(orig, sizeof(*ops), GFP_KERNEL);

	if (ops)
		kmemleak_not_leak(ops);
	return ops;
}

void oq_ops_free(struct proto_ops *ops)
{
	kfree(ops);
}

/*
 * Makes every function of @ours the protocol's (@orig's) again, one pointer at a time:
 * whoever loads a function from @ours from now on calls the protocol's, whatever socket
 * or stack frame still holds the table's address. Every field after @owner is a
 * function pointer.
 */
void oq_ops_neutralize(struct proto_ops *ours, const struct proto_ops *orig)
{
	const size_t start = offsetof(struct proto_ops, release);
	unsigned long *d = (unsigned long *)((char *)ours + start);
	const unsigned long *s = (const unsigned long *)((const char *)orig + start);
	size_t i;

	BUILD_BUG_ON((sizeof(struct proto_ops) - start) % sizeof(unsigned long));
	for (i = 0; i < (sizeof(struct proto_ops) - start) / sizeof(unsigned long); i++)
		WRITE_ONCE(d[i], READ_ONCE(s[i]));
}

/*
 * Whether setsockopt(@level, @optname) on a TCP socket of family @v6 may replace the
 * socket's operations: a ULP (tls, espintcp: their init copies sock->ops into their own
 * tables and installs those), or IPV6_ADDRFORM (installs inet_stream_ops).
 */
bool oq_replaces_ops(bool v6, int level, int optname)
{
	return (level == SOL_TCP && optname == TCP_ULP) ||
	       (v6 && level == SOL_IPV6 && optname == IPV6_ADDRFORM);
}

/*
 * Names the tasks that are inside this module's code (a return address on their stack
 * in the module), for an unload that waits for them. Tasks running right now are
 * skipped: their stacks cannot be walked reliably, and they are making progress.
 * Returns how many were named.
 */
int oq_name_stuck_tasks(void)
{
	struct task_struct *g, *t;
	unsigned long entries[32];
	unsigned int n, i;
	int found = 0;

	rcu_read_lock();
	for_each_process_thread(g, t) {
		if (t == current || task_is_running(t))
			continue;
		n = stack_trace_save_tsk(t, entries, ARRAY_SIZE(entries), 0);
		for (i = 0; i < n; i++) {
			if (!within_module(entries[i], THIS_MODULE))
				continue;
			pr_warn("openqos: unload waits for %s (pid %d, state %c), inside a socket call through a meter's wrapper at %pS\n",
				t->comm, task_pid_nr(t), task_state_to_char(t),
				(void *)entries[i]);
			found++;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

bool oq_tasks_rcu_available(void)
{
	return IS_ENABLED(CONFIG_TASKS_RCU);
}

void oq_synchronize_rcu_tasks(void)
{
	synchronize_rcu_tasks();
}

/* Whether @sk (a listener found by oq_lookup_listener) has user data. */
bool oq_sk_has_user_data(const struct sock *sk)
{
	return rcu_access_pointer(sk->sk_user_data) != NULL;
}

u16 oq_sk_family(const struct sock *sk)
{
	return sk->sk_family;
}

const struct proto_ops *oq_inet_stream_ops(bool v6)
{
#if IS_ENABLED(CONFIG_IPV6)
	if (v6)
		return &inet6_stream_ops;
#endif
	return &inet_stream_ops;
}

unsigned long oq_jiffies(void)
{
	return jiffies;
}

unsigned long oq_hz(void)
{
	return HZ;
}

/* ---- Actuators ---------------------------------------------------------------- */

u64 oq_now_ns(void)
{
	return ktime_get_ns();
}

long oq_ns_to_jiffies(u64 ns)
{
	return max_t(long, nsecs_to_jiffies(ns), 1);
}

/* The send or receive timeout of @sk (0 for a non-blocking call). */
long oq_sock_timeo(struct sock *sk, bool send, bool nonblock)
{
	return send ? sock_sndtimeo(sk, nonblock) : sock_rcvtimeo(sk, nonblock);
}

bool oq_accept_queue_empty(struct sock *sk)
{
	return reqsk_queue_empty(&inet_csk(sk)->icsk_accept_queue);
}

/*
 * Sleeps on @sk's wait queue until @ready(@ctx) returns 0, a signal arrives, or *@timeo
 * runs out; while not ready, @ready returns how long to sleep at most (jiffies) before
 * it is asked again. Returns 0 when ready, -EAGAIN at the timeout, or
 * sock_intr_errno() on a signal (module unload and group deletion kick the task with
 * TIF_NOTIFY_SIGNAL, see oq_kick_waiters: the call then restarts). The wait entry uses
 * woken_wake_function, as sk_wait_event does, so no wake-up between the check and the
 * sleep is lost.
 */
int oq_sk_wait(struct sock *sk, long *timeo, long (*ready)(void *ctx), void *ctx)
{
	DEFINE_WAIT_FUNC(wait, woken_wake_function);
	int err = 0;
	long nap;

	add_wait_queue(sk_sleep(sk), &wait);
	for (;;) {
		nap = ready(ctx);
		if (!nap)
			break;
		if (!*timeo) {
			err = -EAGAIN;
			break;
		}
		if (signal_pending(current)) {
			err = sock_intr_errno(*timeo);
			break;
		}
		if (*timeo == MAX_SCHEDULE_TIMEOUT) {
			wait_woken(&wait, TASK_INTERRUPTIBLE, nap);
		} else {
			long t = min(nap, *timeo);
			long left = wait_woken(&wait, TASK_INTERRUPTIBLE, t);

			*timeo -= t - left;
		}
	}
	remove_wait_queue(sk_sleep(sk), &wait);
	return err;
}

/*
 * Wakes every task sleeping or polling on @sk: its quota came back. @out: for writing
 * (EPOLLOUT), else for accepting (EPOLLIN).
 */
void oq_sk_wake(struct sock *sk, bool out)
{
	__poll_t key = oq_poll_bits(out);
	struct socket_wq *wq;

	rcu_read_lock();
	wq = rcu_dereference(sk->sk_wq);
	if (skwq_has_sleeper(wq))
		__wake_up(&wq->wait, TASK_INTERRUPTIBLE, 0, poll_to_key(key));
	rcu_read_unlock();
}

/* The readiness bits of accepting (EPOLLIN) or of writing (@out: EPOLLOUT). */
__poll_t oq_poll_bits(bool out)
{
	return out ? EPOLLOUT | EPOLLWRNORM | EPOLLWRBAND : EPOLLIN | EPOLLRDNORM;
}

/* Sets or clears O_NONBLOCK in @arg; returns whether it was set before. */
bool oq_accept_nonblock(struct proto_accept_arg *arg, bool set)
{
	bool was = arg->flags & O_NONBLOCK;

	if (set)
		arg->flags |= O_NONBLOCK;
	else
		arg->flags &= ~O_NONBLOCK;
	return was;
}

bool oq_msg_dontwait(const struct msghdr *msg)
{
	return msg->msg_flags & MSG_DONTWAIT;
}

size_t oq_msg_left(const struct msghdr *msg)
{
	return msg_data_left(msg);
}

/* Limits @msg to @n more bytes; returns how many were cut off (for oq_msg_unlimit). */
size_t oq_msg_limit(struct msghdr *msg, size_t n)
{
	size_t count = iov_iter_count(&msg->msg_iter);

	if (count <= n)
		return 0;
	iov_iter_truncate(&msg->msg_iter, n);
	return count - n;
}

void oq_msg_unlimit(struct msghdr *msg, size_t cut)
{
	iov_iter_reexpand(&msg->msg_iter, iov_iter_count(&msg->msg_iter) + cut);
}

/*
 * Copies up to @n bytes from the start of @msg's data into @buf without consuming them
 * (on a copy of the iterator). Process context: user memory may fault in.
 */
size_t oq_msg_peek(const struct msghdr *msg, void *buf, size_t n)
{
	struct iov_iter it = msg->msg_iter;

	return copy_from_iter(buf, min(n, iov_iter_count(&it)), &it);
}

struct net *oq_sk_net(const struct sock *sk)
{
	return sock_net(sk);
}

/* Whether @a and @b belong to the same user (their sk_uid). */
bool oq_sk_same_owner(const struct sock *a, const struct sock *b)
{
	return uid_eq(sk_uid(a), sk_uid(b));
}

/*
 * The first bytes a recvmsg() just delivered, read back from the caller's buffer
 * through @before, a copy of the message's iterator taken before the call (the call
 * advanced the message's own). Only the first segment of a user or kernel iovec is
 * looked at; other kinds give 0. Process context (it may fault the page in).
 */
size_t oq_iter_read_back(const struct iov_iter *before, void *buf, size_t n)
{
	if (!before->count)
		return 0;
	if (user_backed_iter(before)) {
		n = min3(n, before->count, iter_iov_len(before));
		return n - copy_from_user(buf, iter_iov_addr(before), n);
	}
	if (iov_iter_is_kvec(before)) {
		n = min3(n, before->count, before->kvec->iov_len - before->iov_offset);
		memcpy(buf, before->kvec->iov_base + before->iov_offset, n);
		return n;
	}
	return 0;
}

/*
 * How long an FTP data listener may wait for its data connection before it leaves its
 * control port's groups. 0 means the built-in default (rust/src/ftp.rs,
 * DATA_TIMEOUT_MS). Writable at run time, for tests that need it short.
 */
static unsigned int ftp_data_timeout_ms;
module_param(ftp_data_timeout_ms, uint, 0644);
MODULE_PARM_DESC(ftp_data_timeout_ms,
		 "ms an announced FTP data listener stays in its groups without a connection (0: 60000)");

unsigned int oq_ftp_data_timeout_ms(void)
{
	return READ_ONCE(ftp_data_timeout_ms);
}

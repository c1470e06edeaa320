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

#include <linux/netlink.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <net/inet_connection_sock.h>
#include <net/inet_hashtables.h>
#include <net/inet6_hashtables.h>
#include <net/ipv6.h>
#include <net/request_sock.h>
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
	/* NOCOPY: children cloned from this listener get a NULL sk_user_data. */
	__rcu_assign_sk_user_data_with_flags(sk, ctx, SK_USER_DATA_NOCOPY);
	WRITE_ONCE(sk->sk_data_ready, hook);
	write_unlock_bh(&sk->sk_callback_lock);
}

/* Put the default callback back on @sk if it still has @hook. */
static void oq_sk_reset_callback(struct sock *sk, void (*hook)(struct sock *))
{
	write_lock_bh(&sk->sk_callback_lock);
	if (READ_ONCE(sk->sk_data_ready) == hook)
		WRITE_ONCE(sk->sk_data_ready, READ_ONCE(oq_default_data_ready));
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

void oq_child_data_ready(struct sock *child, void (*hook)(struct sock *))
{
	void (*def)(struct sock *) = READ_ONCE(oq_default_data_ready);

	oq_sk_reset_callback(child, hook);
	if (def)
		def(child);
}

u32 oq_sk_ack_backlog(const struct sock *sk)
{
	return READ_ONCE(sk->sk_ack_backlog);
}

static void oq_fill_peer(const struct sock *child, struct oq_peer *peer)
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
				   void (*hook)(struct sock *))
{
	struct request_sock_queue *q = &inet_csk(lsk)->icsk_accept_queue;
	struct request_sock *req;

	spin_lock_bh(&q->rskq_lock);
	req = q->rskq_accept_head;
	if (req) {
		oq_fill_peer(req->sk, peer);
		/*
		 * Whatever happens next, the child leaves this queue (moved, or accepted
		 * and reset by us): drop the inherited hook now, while the queue lock
		 * keeps the child alive, so no pointer into this module survives it.
		 */
		oq_sk_reset_callback(req->sk, hook);
	}
	spin_unlock_bh(&q->rskq_lock);
	return req;
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
 * passive one). Before it is handed to a server, make it an ordinary refcounted socket,
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

int oq_move_head(struct sock *src, struct request_sock *req, struct sock *dst)
{
	struct request_sock_queue *sq = &inet_csk(src)->icsk_accept_queue;
	struct request_sock_queue *dq = &inet_csk(dst)->icsk_accept_queue;
	struct request_sock_queue *first = sq < dq ? sq : dq;
	struct request_sock_queue *second = sq < dq ? dq : sq;
	struct sock *child;
	int err = 0;

	if (src == dst)
		return OQ_MOVE_LOOP;
	if (dst->sk_family != src->sk_family || dst->sk_protocol != IPPROTO_TCP ||
	    dst->sk_type != SOCK_STREAM || !net_eq(sock_net(src), sock_net(dst)))
		return OQ_MOVE_FAMILY;

	/* Both queue locks share one lockdep class: order by address, nest the second. */
	spin_lock_bh(&first->rskq_lock);
	spin_lock_nested(&second->rskq_lock, SINGLE_DEPTH_NESTING);

	child = req->sk;
	if (sq->rskq_accept_head != req)
		err = OQ_MOVE_RACE;
	else if (READ_ONCE(src->sk_state) != TCP_LISTEN || READ_ONCE(dst->sk_state) != TCP_LISTEN)
		err = OQ_MOVE_NOT_LISTENING;
	else if (tcp_rsk(req)->tfo_listener)
		err = OQ_MOVE_FASTOPEN;
#if IS_ENABLED(CONFIG_IPV6)
	else if (src->sk_family == AF_INET6 && dst->sk_ipv6only &&
		 ipv6_addr_v4mapped(&child->sk_v6_daddr))
		err = OQ_MOVE_FAMILY;
#endif
	else if (sk_acceptq_is_full(dst))
		err = OQ_MOVE_FULL;
	else if (!oq_child_take_netref(child))
		err = OQ_MOVE_NETNS;

	if (!err) {
		WRITE_ONCE(sq->rskq_accept_head, req->dl_next);
		if (!sq->rskq_accept_head)
			sq->rskq_accept_tail = NULL;
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

	spin_unlock(&second->rskq_lock);
	spin_unlock_bh(&first->rskq_lock);

	/* Wake accept(), poll and epoll waiters of the target (upstream 3864c6ba1e04). */
	if (!err)
		READ_ONCE(dst->sk_data_ready)(dst);
	return err;
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

void oq_init_work(struct work_struct *work, void (*fn)(struct work_struct *))
{
	INIT_WORK(work, fn);
}

bool oq_schedule_work(struct work_struct *work)
{
	return schedule_work(work);
}

void oq_sock_no_linger(struct socket *sock)
{
	sock_no_linger(sock->sk);
}

/* Generic netlink helpers that are static inlines. */

struct net *oq_genl_info_net(const struct genl_info *info)
{
	return genl_info_net(info);
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

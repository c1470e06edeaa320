/* SPDX-License-Identifier: GPL-2.0 */
/*
 * openqos: prototypes of the C glue in qos_shim.c. The Rust side declares the same
 * functions in qos_sock.rs and qos_netlink.rs; keep them in sync.
 */
#ifndef OPENQOS_SHIM_H
#define OPENQOS_SHIM_H

#include <linux/types.h>

struct genl_info;
struct netlink_callback;
struct netlink_ext_ack;
struct nlattr;
struct net;
struct request_sock;
struct sk_buff;
struct sock;
struct socket;

/* Addresses of an established child, in network byte order; ports in host order. */
struct oq_peer {
	u16 family;
	u16 rport;
	u16 lport;
	u16 pad;
	u32 age_ms;	/* since the handshake */
	u32 pad2;
	struct sock *child;
	u8 raddr[16];
	u8 laddr[16];
};

/* Flags returned by the peek functions. */
enum {
	OQ_PEEK_FIN = 1,	/* the client has closed its side: no more data will come */
	OQ_PEEK_FULL = 2,	/* the byte limit was reached */
	OQ_PEEK_STOP = 4,	/* the consumer stopped early */
	OQ_PEEK_BUSY = 8,	/* the child could not be examined */
};

#define OQ_PEEK_CHUNK 128

enum oq_move_result {
	OQ_MOVE_OK = 0,
	OQ_MOVE_RACE = 1,
	OQ_MOVE_NOT_LISTENING = 2,
	OQ_MOVE_FULL = 3,
	OQ_MOVE_FAMILY = 4,
	OQ_MOVE_FASTOPEN = 5,
	OQ_MOVE_NETNS = 6,
	OQ_MOVE_LOOP = 7,
	OQ_MOVE_HEAD = 8,
	OQ_MOVE_HANDED = 9,	/* moved, and handed over to a module listener's rule */
};

void oq_sk_install_hook(struct sock *sk, void *ctx, void (*hook)(struct sock *));
void oq_sk_restore_hook(struct sock *sk, void (*hook)(struct sock *));
void *oq_sk_hook_ctx(struct sock *sk);
bool oq_sk_is_listener(const struct sock *sk);
void oq_child_data_ready(struct sock *child, void (*hook)(struct sock *));
void oq_child_default_ready(struct sock *child);
void oq_child_peer(const struct sock *child, struct oq_peer *peer);
u32 oq_sk_ack_backlog(const struct sock *sk);
u64 oq_queue_oldest_ns(struct sock *lsk);
struct request_sock *oq_queue_head(struct sock *lsk, struct oq_peer *peer,
				   void (*hook)(struct sock *), bool release);
bool oq_queue_promote(struct sock *lsk, struct sock *child);
int oq_child_peek(struct sock *child, u32 skip, u32 max,
		  bool (*feed)(void *ctx, const u8 *data, u32 len), void *ctx);
int oq_head_peek(struct sock *child, u32 skip, u32 max,
		 bool (*feed)(void *ctx, const u8 *data, u32 len), void *ctx);
void oq_queue_reset_children(struct sock *lsk, void (*hook)(struct sock *));
u64 oq_sock_cookie(struct sock *sk);
struct sock *oq_lookup_listener(const struct sock *src, const struct oq_peer *peer, u16 port);
int oq_move_head(struct sock *src, struct request_sock *req, struct sock *dst,
		 void (*hook)(struct sock *), bool hand_over);
int oq_move_child(struct sock *src, struct sock *child, struct sock *dst,
		  void (*hook)(struct sock *), bool hand_over);
void *oq_sk_module_ctx(struct sock *sk, void (*hook)(struct sock *));
void oq_park_unhash(struct sock *sk);
struct request_sock *oq_park_peek(struct sock *lsk, bool tail, struct oq_peer *peer);
int oq_park_move(struct sock *src, struct sock *child, struct sock *dst);
bool oq_child_lock(struct sock *child);
void oq_child_unlock(struct sock *child);
void oq_sock_no_linger(struct socket *sock);
int oq_listen_sock_create(struct net *net, int family, u16 port, bool v6only,
			  struct socket **res);
struct sock *oq_socket_sk(struct socket *sock);
struct work_struct;
struct delayed_work;
bool oq_work_now(struct delayed_work *dw);
bool oq_nest_enter(unsigned int max);
void oq_nest_exit(void);
bool oq_work_at(struct delayed_work *dw, u32 ms);
bool oq_work_in(struct delayed_work *dw, u32 ms);
struct nlattr *oq_nla_nest_start(struct sk_buff *skb, int type);
void oq_nla_nest_end(struct sk_buff *skb, struct nlattr *start);

void *oq_net_generic(const struct net *net, unsigned int id);
struct net *oq_genl_info_net(const struct genl_info *info);
const void *oq_genl_info_payload(const struct genl_info *info, u32 *len);
struct sk_buff *oq_genlmsg_new(size_t payload);
void oq_genlmsg_end(struct sk_buff *skb, void *hdr);
void oq_genlmsg_cancel(struct sk_buff *skb, void *hdr);
int oq_genlmsg_reply(struct sk_buff *skb, struct genl_info *info);
struct net *oq_sock_net(const struct sock *sk);
struct net *oq_cb_net(const struct netlink_callback *cb);
u32 oq_cb_portid(const struct netlink_callback *cb);
u32 oq_cb_seq(const struct netlink_callback *cb);
long *oq_cb_args(struct netlink_callback *cb);
const struct nlattr *oq_cb_attr(struct netlink_callback *cb, int type);
void oq_nla_nest_cancel(struct sk_buff *skb, struct nlattr *start);
unsigned int oq_skb_len(const struct sk_buff *skb);
struct genl_family;
const struct genl_family *oq_cb_family(struct netlink_callback *cb);
struct netlink_ext_ack *oq_cb_extack(struct netlink_callback *cb);

struct proto_ops;
int oq_port_listeners(struct net *net, u16 port, struct sock **out, int max);
void oq_sock_put(struct sock *sk);
void oq_sock_hold(struct sock *sk);
bool oq_sock_wrap(struct sock *sk, const struct proto_ops *expect,
		  const struct proto_ops *ops, void *rec);
bool oq_sock_unwrap(struct sock *sk, void *rec, const struct proto_ops *ours,
		    const struct proto_ops *orig);
void oq_sk_read_lock(struct sock *sk);
void oq_sk_read_unlock(struct sock *sk);
void *oq_sock_record(struct socket *sock, const struct proto_ops *ops);
void oq_socket_set_ops(struct socket *sock, const struct proto_ops *ops);
u64 oq_accept_delay_ns(const struct sock *sk);
void oq_kick_waiters(struct sock *sk);
struct proto_ops *oq_ops_alloc(const struct proto_ops *orig);
void oq_ops_free(struct proto_ops *ops);
void oq_ops_neutralize(struct proto_ops *ours, const struct proto_ops *orig);
bool oq_replaces_ops(bool v6, int level, int optname);
int oq_name_stuck_tasks(void);
bool oq_tasks_rcu_available(void);
void oq_synchronize_rcu_tasks(void);
bool oq_sk_has_user_data(const struct sock *sk);
u16 oq_sk_family(const struct sock *sk);
const struct proto_ops *oq_inet_stream_ops(bool v6);
unsigned long oq_jiffies(void);
unsigned long oq_hz(void);

/* Actuators (qos_actuators.rs, through the wrappers of qos_sensor.rs). */
struct msghdr;
struct proto_accept_arg;
u64 oq_now_ns(void);
long oq_ns_to_jiffies(u64 ns);
long oq_sock_timeo(struct sock *sk, bool send, bool nonblock);
bool oq_accept_queue_empty(struct sock *sk);
int oq_sk_wait(struct sock *sk, long *timeo, long (*ready)(void *ctx), void *ctx);
void oq_sk_wake(struct sock *sk, bool out);
bool oq_accept_nonblock(struct proto_accept_arg *arg, bool set);
bool oq_msg_dontwait(const struct msghdr *msg);
size_t oq_msg_left(const struct msghdr *msg);
size_t oq_msg_limit(struct msghdr *msg, size_t n);
void oq_msg_unlimit(struct msghdr *msg, size_t cut);
size_t oq_msg_peek(const struct msghdr *msg, void *buf, size_t n);
struct net *oq_sk_net(const struct sock *sk);
__poll_t oq_poll_bits(bool out);
bool oq_sk_same_owner(const struct sock *a, const struct sock *b);
struct iov_iter;
size_t oq_iter_read_back(const struct iov_iter *before, void *buf, size_t n);
unsigned int oq_ftp_data_timeout_ms(void);

#endif /* OPENQOS_SHIM_H */

// SPDX-License-Identifier: GPL-2.0

//! The classifier: rules, their conditions, and the forwarding decision.
//!
//! A rule owns an incoming port. The module listens there itself ([`ModuleListener`]) and
//! for every established connection picks an outgoing port: the first condition, in the
//! order added, that the connection satisfies, else the rule's default port. The
//! connection is then moved into the accept queue of whoever listens on that port.
//!
//! Configuration is serialized by one mutex ([`NETS`]); the hook never takes it. It reads
//! the rule's current [`Policy`], an immutable snapshot replaced as a whole on every
//! change (so a connection sees either the old or the new condition list, never a mix).

use crate::{
    abi::{self, limits, rule_flags, rule_type},
    addr::{Client, Prefix},
    chain::{self, ChainError},
    qos_sensor::{Counter, RuleStats},
    qos_sock::{Drained, Family, Forwarder, ModuleListener, MoveError, NetRef},
};
use kernel::{
    c_str,
    prelude::*,
    str::CStr,
    sync::{global_lock, new_spinlock_irq, rcu, Arc, SpinLockIrq},
};

/// A refused configuration change: errno, message for extack, offending attribute.
pub(crate) struct Rejection {
    /// The errno returned to the caller.
    pub(crate) err: Error,
    /// The extack message.
    pub(crate) msg: &'static CStr,
    /// The attribute to point at, if one is to blame.
    pub(crate) attr: Option<u16>,
}

/// Shorthand for a [`Rejection`].
pub(crate) const fn reject(err: Error, msg: &'static CStr, attr: Option<u16>) -> Rejection {
    Rejection { err, msg, attr }
}

impl From<kernel::alloc::AllocError> for Rejection {
    fn from(_: kernel::alloc::AllocError) -> Self {
        ENOMEM.into()
    }
}

impl From<Error> for Rejection {
    fn from(err: Error) -> Self {
        reject(err, c_str!("openqos: out of memory or kernel error"), None)
    }
}

/// One condition: a matcher and the port it sends to.
pub(crate) struct Cond {
    /// Source address condition.
    pub(crate) prefix: Prefix,
    /// Outgoing port.
    pub(crate) out: u16,
    /// Connections that matched (shared across policy snapshots).
    pub(crate) hits: Arc<Counter>,
}

/// An immutable snapshot of a rule's forwarding decision.
pub(crate) struct Policy {
    /// Port used when no condition matches.
    pub(crate) default_port: u16,
    /// Conditions, tried in order.
    pub(crate) conds: KVec<Cond>,
}

impl Policy {
    /// The outgoing port for `client` and the counter of the condition that chose it
    /// (`None`: the default port).
    fn classify(&self, client: &Client) -> (u16, Option<&Counter>) {
        self.conds
            .iter()
            .find(|c| c.prefix.matches(client))
            .map_or((self.default_port, None), |c| (c.out, Some(&*c.hits)))
    }

    /// Every port this policy may forward to.
    fn targets(&self) -> impl Iterator<Item = u16> + '_ {
        Iterator::chain(
            core::iter::once(self.default_port),
            self.conds.iter().map(|c| c.out),
        )
    }

    /// A copy sharing the condition counters.
    fn try_clone(&self, extra: usize) -> Result<KVec<Cond>> {
        let mut conds = KVec::with_capacity(self.conds.len() + extra, GFP_KERNEL)?;
        for c in self.conds.iter() {
            conds.push(
                Cond {
                    prefix: c.prefix,
                    out: c.out,
                    hits: c.hits.clone(),
                },
                GFP_KERNEL,
            )?;
        }
        Ok(conds)
    }
}

/// State of a rule shared between configuration and its listeners' hooks.
#[pin_data]
pub(crate) struct RuleShared {
    #[pin]
    policy: SpinLockIrq<Arc<Policy>>,
    /// Outcome counters.
    pub(crate) stats: RuleStats,
}

impl RuleShared {
    /// The current policy. The lock is held only to take a reference.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy.lock().clone()
    }

    fn set_policy(&self, new: Arc<Policy>) {
        let old = core::mem::replace(&mut *self.policy.lock(), new);
        // The old snapshot is freed here, outside the lock, or by the last hook using it.
        drop(old);
    }
}

/// The [`Forwarder`] of a rule's listeners.
pub(crate) struct Forward {
    shared: Arc<RuleShared>,
}

impl Forwarder for Forward {
    fn drain(&self, l: &ModuleListener<Self>, process: bool) -> Drained {
        for _ in 0..limits::HOOK_BUDGET {
            let Some((head, peer)) = l.queue_head() else {
                return Drained::Empty;
            };
            let policy = self.shared.policy();
            let (port, hits) = policy.classify(&peer.client());
            let moved = {
                let rcu = rcu::read_lock();
                match l.sock().lookup(&rcu, &peer, port) {
                    Some(target) => l.sock().move_head(&head, target),
                    None => Err(MoveError::NoListener),
                }
            };
            let stats = &self.shared.stats;
            match moved {
                Ok(()) => stats.forwarded.inc(),
                Err(MoveError::Race) => continue,
                // Refusing needs `accept()`, which needs process context.
                Err(_) if !process => return Drained::Defer,
                Err(why) => {
                    if l.sock().refuse_head().is_err() {
                        return Drained::Defer;
                    }
                    stats.refused(why);
                }
            }
            match hits {
                Some(h) => h.inc(),
                None => stats.default_hits.inc(),
            }
        }
        Drained::Defer
    }
}

/// A configured rule.
pub(crate) struct Rule {
    /// Incoming port.
    pub(crate) port: u16,
    /// One of [`rule_type`].
    pub(crate) kind: u8,
    /// Bits of [`rule_flags`].
    pub(crate) flags: u32,
    /// Policy and counters.
    pub(crate) shared: Arc<RuleShared>,
    listeners: KVec<Pin<KBox<ModuleListener<Forward>>>>,
}

impl Rule {
    /// Connections waiting in the module's own queues for this rule.
    pub(crate) fn waiting(&self) -> u64 {
        self.listeners
            .iter()
            .map(|l| u64::from(l.sock().waiting()))
            .sum()
    }
}

/// The rules of one network namespace.
pub(crate) struct NetRules {
    key: usize,
    /// Rules in creation order.
    pub(crate) rules: KVec<Rule>,
}

global_lock! {
    // SAFETY: initialized in the module's `init` before anything else uses it.
    pub(crate) unsafe(uninit) static NETS: Mutex<KVec<NetRules>> = KVec::new();
}

/// The configuration of every namespace, locked.
pub(crate) type Nets = kernel::sync::GlobalGuard<NETS>;

fn find(nets: &Nets, net: NetRef) -> Option<&NetRules> {
    nets.iter().find(|n| n.key == net.key())
}

fn find_mut(nets: &mut Nets, net: NetRef) -> Option<&mut NetRules> {
    nets.iter_mut().find(|n| n.key == net.key())
}

/// The rules of `net`, if any.
pub(crate) fn rules(nets: &Nets, net: NetRef) -> &[Rule] {
    find(nets, net).map_or(&[], |n| &n.rules[..])
}

fn rule_mut<'a>(nets: &'a mut Nets, net: NetRef, port: u16) -> Result<&'a mut Rule, Rejection> {
    find_mut(nets, net)
        .and_then(|n| n.rules.iter_mut().find(|r| r.port == port))
        .ok_or(reject(
            ENOENT,
            c_str!("no rule on this incoming port"),
            Some(abi::attr::PORT),
        ))
}

/// Checks that the namespace's rules, with `port`'s targets replaced by `candidate`,
/// form no cycle and no chain deeper than the limit.
fn check_chains(rules: &[Rule], port: u16, candidate: &Policy, attr: u16) -> Result<(), Rejection> {
    let policies = {
        let mut v = KVec::with_capacity(rules.len(), GFP_KERNEL)?;
        for r in rules.iter().filter(|r| r.port != port) {
            v.push((r.port, r.shared.policy()), GFP_KERNEL)?;
        }
        v
    };
    let targets = |p: u16| {
        if p == port {
            Some(candidate.targets())
        } else {
            policies
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, pol)| pol.targets())
        }
    };
    let ports = Iterator::chain(policies.iter().map(|(p, _)| *p), core::iter::once(port));
    chain::check(ports, &targets, limits::MAX_CHAIN_DEPTH).map_err(|e| match e {
        ChainError::Cycle(_) => reject(
            ELOOP,
            c_str!("outgoing port leads back to this rule's incoming port"),
            Some(attr),
        ),
        ChainError::TooDeep(_) => reject(
            ELOOP,
            c_str!("chain of rules would be longer than the limit (8)"),
            Some(attr),
        ),
    })
}

/// Creates a rule listening on `port` in `net`.
pub(crate) fn rule_new(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    kind: u8,
    default_port: u16,
    flags: u32,
) -> Result<(), Rejection> {
    if kind != rule_type::ADDRESS {
        return Err(reject(
            EOPNOTSUPP,
            c_str!("only address rules (type a) are implemented in this version"),
            Some(abi::attr::RULE_TYPE),
        ));
    }
    let existing = rules(nets, net);
    if existing.iter().any(|r| r.port == port) {
        return Err(reject(
            EEXIST,
            c_str!("a rule already owns this incoming port"),
            Some(abi::attr::PORT),
        ));
    }
    if existing.len() >= limits::MAX_RULES {
        return Err(reject(
            ENOSPC,
            c_str!("too many rules in this namespace (256)"),
            None,
        ));
    }
    let policy = Arc::new(
        Policy {
            default_port,
            conds: KVec::new(),
        },
        GFP_KERNEL,
    )?;
    check_chains(existing, port, &policy, abi::attr::DEFAULT_PORT)?;

    let shared = Arc::pin_init(
        pin_init!(RuleShared {
            policy <- new_spinlock_irq!(policy, "openqos_rule_policy"),
            stats: RuleStats::new(),
        }),
        GFP_KERNEL,
    )?;
    let families: &[Family] = if flags & rule_flags::DUAL_STACK != 0 {
        &[Family::Inet6Dual]
    } else {
        &[Family::Inet, Family::Inet6Only]
    };
    let mut listeners = KVec::with_capacity(families.len(), GFP_KERNEL)?;
    for f in families {
        let fwd = Forward {
            shared: shared.clone(),
        };
        // On failure, the listeners created so far are dropped (closed) here: nothing is
        // left half-created.
        let l = ModuleListener::new(net, *f, port, fwd).map_err(|e| {
            if e == EADDRINUSE {
                reject(
                    e,
                    c_str!("another socket already listens on the incoming port"),
                    Some(abi::attr::PORT),
                )
            } else {
                reject(
                    e,
                    c_str!("could not listen on the incoming port"),
                    Some(abi::attr::PORT),
                )
            }
        })?;
        listeners.push(l, GFP_KERNEL)?;
    }
    let rule = Rule {
        port,
        kind,
        flags,
        shared,
        listeners,
    };
    if let Some(n) = find_mut(nets, net) {
        n.rules.push(rule, GFP_KERNEL)?;
    } else {
        let mut rules = KVec::new();
        rules.push(rule, GFP_KERNEL)?;
        nets.push(
            NetRules {
                key: net.key(),
                rules,
            },
            GFP_KERNEL,
        )?;
    }
    Ok(())
}

/// Deletes the rule on `port`; its listeners close (connections still queued there are
/// reset).
pub(crate) fn rule_del(nets: &mut Nets, net: NetRef, port: u16) -> Result<(), Rejection> {
    let n = find_mut(nets, net).ok_or(reject(
        ENOENT,
        c_str!("no rule on this incoming port"),
        Some(abi::attr::PORT),
    ))?;
    let i = n.rules.iter().position(|r| r.port == port).ok_or(reject(
        ENOENT,
        c_str!("no rule on this incoming port"),
        Some(abi::attr::PORT),
    ))?;
    drop(n.rules.remove(i));
    Ok(())
}

/// Appends a condition to the rule on `port`.
pub(crate) fn cond_new(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    prefix: Prefix,
    out: u16,
) -> Result<(), Rejection> {
    let old = rule_mut(nets, net, port)?.shared.policy();
    if old.conds.len() >= limits::MAX_CONDS {
        return Err(reject(
            ENOSPC,
            c_str!("too many conditions in this rule (1024)"),
            None,
        ));
    }
    let mut conds = old.try_clone(1)?;
    conds.push(
        Cond {
            prefix,
            out,
            hits: Arc::new(Counter::new(), GFP_KERNEL)?,
        },
        GFP_KERNEL,
    )?;
    let new = Arc::new(
        Policy {
            default_port: old.default_port,
            conds,
        },
        GFP_KERNEL,
    )?;
    check_chains(rules(nets, net), port, &new, abi::attr::OUT_PORT)?;
    rule_mut(nets, net, port)?.shared.set_policy(new);
    Ok(())
}

/// Deletes the condition at 1-based `index` of the rule on `port`.
pub(crate) fn cond_del(
    nets: &mut Nets,
    net: NetRef,
    port: u16,
    index: u32,
) -> Result<(), Rejection> {
    let rule = rule_mut(nets, net, port)?;
    let old = rule.shared.policy();
    let i = (index as usize)
        .checked_sub(1)
        .filter(|i| *i < old.conds.len())
        .ok_or(reject(
            ENOENT,
            c_str!("the rule has no condition at this index"),
            Some(abi::attr::COND_INDEX),
        ))?;
    let mut conds = old.try_clone(0)?;
    drop(conds.remove(i));
    let new = Arc::new(
        Policy {
            default_port: old.default_port,
            conds,
        },
        GFP_KERNEL,
    )?;
    rule.shared.set_policy(new);
    Ok(())
}

/// Deletes every rule of `net`.
pub(crate) fn flush(nets: &mut Nets, net: NetRef) {
    if let Some(i) = nets.iter().position(|n| n.key == net.key()) {
        drop(nets.remove(i));
    }
    if nets.is_empty() {
        // Give the table's buffer back: statics are never dropped, so this is what frees
        // it when the module unloads (pernet exit flushes every namespace first).
        **nets = KVec::new();
    }
}

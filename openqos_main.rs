// SPDX-License-Identifier: GPL-2.0

//! openqos: kernel support for open QoS-aware computing.
//!
//! Retrofits quality of service onto unmodified servers. A rule owns an incoming port: the
//! module listens there itself and moves each established connection into the accept
//! queue of one of several outgoing ports, where separate server instances (one per
//! class) accept it as if the client had connected there. Configuration travels over the
//! `openqos` generic netlink family; state is per network namespace.
//!
//! See `Documentation/design.md`. The module's files import one way, from this crate
//! root down to the C boundary (design.md, "Layout"; `scripts/check-layers`).

// The shared `no_std` code, compiled unchanged here and in the userspace tools. Some of
// it (encoders, helpers for the tools) is unused in the kernel.
#[path = "rust/src/abi.rs"]
#[allow(dead_code, unreachable_pub)]
mod abi;
#[path = "rust/src/addr.rs"]
#[allow(dead_code, unreachable_pub)]
mod addr;
#[path = "rust/src/chain.rs"]
#[allow(dead_code, unreachable_pub)]
mod chain;
#[path = "rust/src/content.rs"]
#[allow(dead_code, unreachable_pub)]
mod content;
#[path = "rust/src/ftp.rs"]
#[allow(dead_code, unreachable_pub)]
mod ftp;
#[path = "rust/src/nla.rs"]
#[allow(dead_code, unreachable_pub)]
mod nla;
#[path = "rust/src/prob.rs"]
#[allow(dead_code, unreachable_pub)]
mod prob;
#[path = "rust/src/quota.rs"]
#[allow(dead_code, unreachable_pub)]
mod quota;

mod qos_actuators;
mod qos_classifier;
mod qos_error;
mod qos_ffi;
mod qos_netlink;
mod qos_prio;
mod qos_sensor;
mod qos_sock;
mod qos_store;
mod qos_work;

use kernel::{bindings, prelude::*};

module! {
    type: OpenQos,
    name: "openqos",
    authors: ["openqos developers"],
    description: "Kernel support for open QoS-aware computing: classification, sensors, actuators",
    license: "GPL",
}

/// Pernet registration: gives every namespace its state (`init`) and tears it down when
/// the namespace goes away (`exit`).
///
/// # Invariants
///
/// `ops` is registered from `register()` until `drop`.
struct Pernet {
    ops: KBox<bindings::pernet_operations>,
}

// SAFETY: the operations table is only read by the kernel after registration.
unsafe impl Send for Pernet {}
// SAFETY: as above.
unsafe impl Sync for Pernet {}

/// Called when a network namespace is created (or for every existing one when the module
/// loads).
///
/// # Safety
///
/// Called by the pernet core with a valid namespace being set up, our `net_generic` slot
/// allocated and zeroed.
unsafe extern "C" fn net_init(net: *mut bindings::net) -> core::ffi::c_int {
    // SAFETY: `net` is valid for the duration of the call.
    let Some(net) = (unsafe { qos_sock::NetRef::new(net) }) else {
        return EINVAL.to_errno();
    };
    match qos_store::net_init(net) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Called when a network namespace is dismantled.
///
/// # Safety
///
/// Called by the pernet core with a valid namespace being dismantled, after our `init`
/// succeeded for it.
unsafe extern "C" fn net_exit(net: *mut bindings::net) {
    // SAFETY: `net` is valid for the duration of the call.
    if let Some(net) = unsafe { qos_sock::NetRef::new(net) } {
        qos_store::net_exit(net);
    }
}

impl Pernet {
    fn register() -> Result<Self> {
        let mut ops = KBox::new(bindings::pernet_operations::default(), GFP_KERNEL)?;
        ops.init = Some(net_init);
        ops.exit = Some(net_exit);
        // One pointer per namespace in its `net_generic` array: its `NetState`.
        ops.id = qos_store::NET_ID.ptr();
        ops.size = core::mem::size_of::<*const qos_store::NetState>();
        // SAFETY: `ops` is boxed and stays registered until `drop`.
        kernel::error::to_result(unsafe { bindings::register_pernet_subsys(&mut *ops) })?;
        // INVARIANT: registered just above.
        Ok(Self { ops })
    }
}

impl Drop for Pernet {
    fn drop(&mut self) {
        // SAFETY: registered by `register` (type invariant). Unregistering runs `net_exit`
        // for every namespace, which closes every listener the module owns.
        unsafe { bindings::unregister_pernet_subsys(&mut *self.ops) };
    }
}

struct OpenQos {
    genl: Option<qos_netlink::GenlFamily>,
    pernet: Option<Pernet>,
    sensors: Option<qos_sensor::Sensors>,
}

impl Drop for OpenQos {
    fn drop(&mut self) {
        // First stop taking commands, then give every metered socket its operations
        // back, then tear down every rule (no more moves, so no more rescans), and last
        // wait until no task can be inside a wrapper of the sensors.
        drop(self.genl.take());
        let graveyard = qos_store::shutdown_meters();
        drop(self.pernet.take());
        if let Some(s) = self.sensors.take() {
            s.unregister(graveyard);
        }
    }
}

impl kernel::Module for OpenQos {
    fn init(module: &'static ThisModule) -> Result<Self> {
        // SAFETY: called once, before anything can use the lock.
        unsafe { qos_store::REGISTRY.init() };
        let sensors = qos_sensor::Sensors::register(qos_store::rescan_meters)?;
        let mut this = OpenQos {
            genl: None,
            pernet: None,
            sensors: Some(sensors),
        };
        this.pernet = Some(Pernet::register()?);
        this.genl = Some(qos_netlink::GenlFamily::register(module)?);
        pr_info!("openqos loaded\n");
        Ok(this)
    }
}

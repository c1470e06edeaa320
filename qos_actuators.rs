// SPDX-License-Identifier: GPL-2.0

//! Actuators: socket groups with timer-replenished quotas.
//!
//! Not implemented in this version. The paper's three actuators (accept ratio across
//! ports, accept rate of a port, aggregate output bandwidth of the connections accepted
//! from a group of ports) build on the per-port state the classifier keeps; they are
//! tracked as their own work item. Nothing in the module refers to this file yet, and no
//! command of the netlink family pretends to configure them.

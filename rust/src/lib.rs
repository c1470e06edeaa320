// SPDX-License-Identifier: GPL-2.0

//! Code shared by the openqos kernel module and its userspace tools.
//!
//! Every file here is `no_std`, allocation-free Rust that the kernel module compiles
//! unchanged (`#[path]` includes from the module's crate root) and that userspace uses
//! as an ordinary crate. The netlink ABI is therefore defined exactly once.

#![no_std]

pub mod abi;
pub mod addr;
pub mod chain;
pub mod content;
pub mod ftp;
pub mod nla;
pub mod prob;
pub mod quota;

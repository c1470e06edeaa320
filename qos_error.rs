// SPDX-License-Identifier: GPL-2.0

//! The shared error type of configuration changes.
//!
//! A leaf: it imports nothing of the module, so every layer can return a [`Rejection`]
//! (the netlink layer turns it into an errno and an extack message).

use kernel::{c_str, prelude::*, str::CStr};

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

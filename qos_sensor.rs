// SPDX-License-Identifier: GPL-2.0

//! Sensors: counters kept by the classifier, exact under concurrency on all CPUs.
//!
//! Every counter is a relaxed atomic, incremented once per connection at the point where
//! that connection's fate is decided, so a reader sees each connection exactly once.
//! Counters live in reference-counted objects that rule edits carry over, so replacing a
//! rule's condition list never resets them.

use crate::qos_sock::MoveError;
use kernel::sync::atomic::{Atomic, Relaxed};

/// A monotonically increasing event counter.
pub(crate) struct Counter(Atomic<u64>);

impl Counter {
    /// A counter at zero.
    pub(crate) const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// Adds one.
    pub(crate) fn inc(&self) {
        self.0.add(1, Relaxed);
    }

    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Outcome counters of one rule.
pub(crate) struct RuleStats {
    /// Connections that took the default port.
    pub(crate) default_hits: Counter,
    /// Connections moved into a target's accept queue.
    pub(crate) forwarded: Counter,
    /// Refused: nobody listens on the outgoing port.
    pub(crate) no_listener: Counter,
    /// Refused: the target's accept queue was full.
    pub(crate) queue_full: Counter,
    /// Refused: the target's family cannot take the connection.
    pub(crate) family_mismatch: Counter,
    /// Refused for another reason.
    pub(crate) other_refused: Counter,
    /// Content rules: sent to the default port after the data timeout.
    pub(crate) timed_out: Counter,
    /// Content rules: sent to the default port because too many were waiting for data.
    pub(crate) pending_full: Counter,
}

impl RuleStats {
    /// All counters at zero.
    pub(crate) const fn new() -> Self {
        Self {
            default_hits: Counter::new(),
            forwarded: Counter::new(),
            no_listener: Counter::new(),
            queue_full: Counter::new(),
            family_mismatch: Counter::new(),
            other_refused: Counter::new(),
            timed_out: Counter::new(),
            pending_full: Counter::new(),
        }
    }

    /// Counts a connection refused for `why`.
    pub(crate) fn refused(&self, why: MoveError) {
        match why {
            MoveError::NoListener => self.no_listener.inc(),
            MoveError::Full => self.queue_full.inc(),
            MoveError::Family => self.family_mismatch.inc(),
            MoveError::Race
            | MoveError::Other
            | MoveError::Loop
            | MoveError::Head
            | MoveError::Process => self.other_refused.inc(),
        }
    }
}

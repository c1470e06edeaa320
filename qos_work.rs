// SPDX-License-Identifier: GPL-2.0

//! Deferred work: one typed delayed-work item, [`Timer<T>`], for every object of the module
//! that has work done later in process context: a module listener draining its queue
//! (`qos_sock.rs`), a socket group waking the callers it held back (`qos_actuators.rs`)
//! and the sensors' rescan of metered ports (`qos_sensor.rs`).
//!
//! As with `kernel::workqueue` (`Work<T>`, `HasWork`, `WorkItemPointer`), the object embeds
//! the timer and names the field with [`impl_has_timer!`]; [`TimerItem::Ref`] says what a
//! queued run holds of the object, and the run gets exactly that back:
//! - `Arc<T>`: a queued run owns a reference, taken when the timer goes from idle to
//!   pending and handed to [`TimerItem::run`] (or dropped by [`Timer::cancel_sync`]), so
//!   an object cannot go away while its timer is queued;
//! - `&'static T`: a static object;
//! - [`Pinned<T>`]: a pinned object whose owner cancels the timer before dropping it, as
//!   the unsafe trait [`CancelsBeforeDrop`] promises.
//!
//! The kernel crate's `DelayedWork` does not fit: it can only queue (`queue_delayed_work`),
//! while listeners and groups bring a queued deadline forward (`mod_delayed_work`), and
//! it has no cancel. Every timer runs on `system_percpu_wq`.
//!
//! Layering: a leaf above the C boundary; it imports only `qos_ffi`.

use crate::qos_ffi as shim;
use core::{marker::PhantomData, ops::Deref, ptr::NonNull};
use kernel::{
    bindings,
    prelude::*,
    str::CStr,
    sync::{Arc, LockClassKey},
    types::Opaque,
};

// `run` finds the `delayed_work` from the `work_struct` it is given, its first member.
const _: () = assert!(core::mem::offset_of!(bindings::delayed_work, work) == 0);

/// A delayed work item embedded in a `T`, running [`TimerItem::run`].
///
/// # Invariants
///
/// Once initialized ([`Timer::new`], or [`Timer::init`] for a static), `dw` is a
/// `delayed_work` whose function is `run::<T>`, inside a `T` at `T::OFFSET`, and it is
/// queued only through [`Timer::now`], [`Timer::at`] and [`Timer::after`]: while it is
/// pending, exactly one `T::Ref` of its object is given up (`into_raw`) for the run.
#[repr(transparent)]
#[pin_data]
pub(crate) struct Timer<T> {
    #[pin]
    dw: Opaque<bindings::delayed_work>,
    _t: PhantomData<T>,
}

// SAFETY: a work item is used from any context through the workqueue API, which does its
// own locking; the `T` it runs is `Send + Sync` (`TimerItem`).
unsafe impl<T> Send for Timer<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Timer<T> {}

/// A type with a [`Timer<Self>`] field.
///
/// # Safety
///
/// `OFFSET` is the offset of a field of type `Timer<Self>` in `Self`. Use
/// [`impl_has_timer!`], which checks the field's type.
pub(crate) unsafe trait HasTimer: Sized {
    /// Where the timer is.
    const OFFSET: usize;
}

/// Implements [`HasTimer`] for a type: `impl_has_timer!(impl{T: Bound} HasTimer for
/// Type<T> { self.field })`, the generics optional.
macro_rules! impl_has_timer {
    (impl$({$($g:tt)*})? HasTimer for $t:ty { self.$f:ident }) => {
        // SAFETY: `OFFSET` is the offset of `$f`, whose type `_check` proves to be
        // `Timer<Self>`.
        unsafe impl$(<$($g)*>)? $crate::qos_work::HasTimer for $t {
            const OFFSET: usize = {
                #[allow(dead_code)]
                fn _check$(<$($g)*>)?(x: &$t) -> &$crate::qos_work::Timer<$t> {
                    &x.$f
                }
                ::core::mem::offset_of!(Self, $f)
            };
        }
    };
}
pub(crate) use impl_has_timer;

/// A timer initializer with lock classes of its own (one per call site).
macro_rules! new_timer {
    () => {
        $crate::qos_work::Timer::new(
            ::kernel::c_str!(::core::concat!(::core::file!(), ":", ::core::line!())),
            ::kernel::static_lock_class!(),
            ::kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_timer;

/// An object whose timer runs [`TimerItem::run`].
pub(crate) trait TimerItem: HasTimer + Send + Sync {
    /// What a queued run holds of the object.
    type Ref: TimerRef<Self>;

    /// The work, in process context.
    fn run(this: Self::Ref);
}

/// What a queued run holds of its object.
///
/// # Safety
///
/// The object stays valid from `into_raw` until the matching `from_raw` and as long as
/// the value it returns lives.
pub(crate) unsafe trait TimerRef<T>: Deref<Target = T> + Sized {
    /// Gives the handle up, for a queued run.
    fn into_raw(self) -> *const T;

    /// Takes a handle back.
    ///
    /// # Safety
    ///
    /// `p` came from `into_raw` of this type and is taken back once.
    unsafe fn from_raw(p: *const T) -> Self;
}

// SAFETY: a reference keeps the object alive until it is taken back and dropped.
unsafe impl<T> TimerRef<T> for Arc<T> {
    fn into_raw(self) -> *const T {
        Arc::into_raw(self)
    }

    unsafe fn from_raw(p: *const T) -> Self {
        // SAFETY: `p` came from `Arc::into_raw` and is taken back once (caller).
        unsafe { Arc::from_raw(p) }
    }
}

// SAFETY: a static object is valid forever.
unsafe impl<T: 'static> TimerRef<T> for &'static T {
    fn into_raw(self) -> *const T {
        self
    }

    unsafe fn from_raw(p: *const T) -> Self {
        // SAFETY: `p` came from a `&'static T` (caller).
        unsafe { &*p }
    }
}

/// A pinned object whose owner cancels its timer ([`Timer::cancel_sync`]) before it
/// drops the object.
///
/// # Safety
///
/// Every value of the type lives pinned; its owner calls `cancel_sync` on its timer, at a
/// point where nothing can queue the timer again, before any part of it that
/// [`TimerItem::run`] uses goes away; and `run` does not keep its [`Pinned`] past its
/// return.
pub(crate) unsafe trait CancelsBeforeDrop {}

/// The handle a queued run has of a [`CancelsBeforeDrop`] object.
///
/// # Invariants
///
/// Points at a live, pinned `T`: made from a reference, then only held by a queued or
/// running run, which its owner's cancel waits for.
pub(crate) struct Pinned<T: CancelsBeforeDrop>(NonNull<T>);

impl<T: CancelsBeforeDrop> Pinned<T> {
    /// The handle for queuing `this`'s timer.
    pub(crate) fn new(this: &T) -> Self {
        // INVARIANT: `this` is live and pinned (`CancelsBeforeDrop`); the handle goes to
        // the timer at once.
        Self(NonNull::from(this))
    }
}

impl<T: CancelsBeforeDrop> Deref for Pinned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the object is live (type invariant).
        unsafe { self.0.as_ref() }
    }
}

// SAFETY: the owner's cancel waits for every run before the object goes
// (`CancelsBeforeDrop`).
unsafe impl<T: CancelsBeforeDrop> TimerRef<T> for Pinned<T> {
    fn into_raw(self) -> *const T {
        self.0.as_ptr()
    }

    unsafe fn from_raw(p: *const T) -> Self {
        // SAFETY: `p` came from `into_raw`, so it is not null.
        Self(unsafe { NonNull::new_unchecked(p.cast_mut()) })
    }
}

/// The work function of every [`Timer<T>`].
///
/// # Safety
///
/// Called by the workqueue for the `work` of a pending `Timer<T>`'s `delayed_work`.
unsafe extern "C" fn run<T: TimerItem>(work: *mut bindings::work_struct) {
    // SAFETY: `work` starts the `delayed_work` (checked above), which is the `Timer<T>`
    // (`repr(transparent)` over `Opaque`, which has its contents' layout) at `T::OFFSET`
    // of a `T` (type invariant of `Timer`).
    let p = unsafe { work.cast::<u8>().sub(T::OFFSET) }.cast::<T>();
    // SAFETY: the timer was pending, so one handle was given up for this run (type
    // invariant of `Timer`); the run takes it back.
    T::run(unsafe { T::Ref::from_raw(p) })
}

impl<T: TimerItem> Timer<T> {
    /// An initializer; `name` and the two lock classes (work and timer) are for lockdep
    /// ([`new_timer!`] makes them).
    pub(crate) fn new(
        name: &'static CStr,
        work_key: Pin<&'static LockClassKey>,
        timer_key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            dw <- Opaque::ffi_init(|slot: *mut bindings::delayed_work| {
                // SAFETY: `slot` is valid for writes and pinned.
                unsafe { Self::init_raw(slot, name, work_key, timer_key) }
            }),
            _t: PhantomData,
        })
    }

    /// A timer for a static, unusable until [`Timer::init`].
    pub(crate) const fn uninit() -> Self {
        Self {
            dw: Opaque::uninit(),
            _t: PhantomData,
        }
    }

    /// Initializes a timer made by [`Timer::uninit`].
    ///
    /// # Safety
    ///
    /// Called once, before any other use of the timer, which never moves (a static).
    pub(crate) unsafe fn init(
        &self,
        name: &'static CStr,
        work_key: Pin<&'static LockClassKey>,
        timer_key: Pin<&'static LockClassKey>,
    ) {
        // SAFETY: not in use yet and never moves (caller).
        unsafe { Self::init_raw(self.dw.get(), name, work_key, timer_key) }
    }

    /// # Safety
    ///
    /// `slot` is valid for writes, not in use, and does not move.
    unsafe fn init_raw(
        slot: *mut bindings::delayed_work,
        name: &'static CStr,
        work_key: Pin<&'static LockClassKey>,
        timer_key: Pin<&'static LockClassKey>,
    ) {
        // SAFETY: `slot` is valid (caller); `run::<T>` is a work function for a `Timer<T>`
        // inside a `T` (`HasTimer`), which is what `slot` becomes.
        unsafe {
            bindings::init_work_with_key(
                core::ptr::addr_of_mut!((*slot).work),
                Some(run::<T>),
                false,
                name.as_char_ptr(),
                work_key.as_ptr(),
            )
        };
        // SAFETY: the timer of a `delayed_work`, only ever armed by the workqueue core,
        // with its function, irqsafe (as `INIT_DELAYED_WORK` does).
        unsafe {
            bindings::timer_init_key(
                core::ptr::addr_of_mut!((*slot).timer),
                Some(bindings::delayed_work_timer_fn),
                bindings::TIMER_IRQSAFE,
                name.as_char_ptr(),
                timer_key.as_ptr(),
            )
        };
    }

    /// Queues the timer of `this`'s object with `queue`, which returns whether it took an
    /// idle timer to pending (then the handle goes to the run; else it is dropped here).
    fn queue(this: T::Ref, queue: impl FnOnce(*mut bindings::delayed_work) -> bool) {
        let p = this.into_raw();
        // SAFETY: `p` points at a live `T` (`TimerRef`), whose `Timer<T>` is at `OFFSET`
        // (`HasTimer`) and initialized (an object with a `Timer` is only reachable once
        // initialized: `new` is part of its initializer, `init` runs before a static is
        // used).
        let dw = unsafe { p.cast::<u8>().add(T::OFFSET) }
            .cast::<Timer<T>>()
            .cast_mut()
            .cast::<bindings::delayed_work>();
        if !queue(dw) {
            // SAFETY: the workqueue did not take the handle: take it back, once.
            drop(unsafe { T::Ref::from_raw(p) });
        }
    }

    /// Runs the timer of `this`'s object now (a queued deadline is brought forward).
    pub(crate) fn now(this: T::Ref) {
        // SAFETY: `dw` is an initialized `delayed_work` (see `queue`).
        Self::queue(this, |dw| unsafe { shim::oq_work_now(dw) })
    }

    /// Runs the timer of `this`'s object in `ms` milliseconds, or sooner if it is queued
    /// for sooner.
    pub(crate) fn at(this: T::Ref, ms: u32) {
        // SAFETY: as in `now`.
        Self::queue(this, |dw| unsafe { shim::oq_work_at(dw, ms) })
    }

    /// Runs the timer of `this`'s object in `ms` milliseconds, whenever it was queued for.
    pub(crate) fn after(this: T::Ref, ms: u32) {
        // SAFETY: as in `now`.
        Self::queue(this, |dw| unsafe { shim::oq_work_in(dw, ms) })
    }

    /// Cancels the timer and waits for a run in progress; a queued run's handle is
    /// dropped. Whether the timer was pending. May sleep.
    ///
    /// The caller makes sure nothing queues it again if it is to stay idle, and does not
    /// call this from the timer's own run (it would wait for itself).
    pub(crate) fn cancel_sync(&self) -> bool {
        kernel::task::might_sleep();
        // SAFETY: initialized (an object is only reachable once its timer is, see
        // `queue`); process context (`might_sleep`).
        let was = unsafe { bindings::cancel_delayed_work_sync(self.dw.get()) };
        if was {
            // SAFETY: `self` is the `Timer<T>` at `OFFSET` of a `T` (`HasTimer`).
            let p = unsafe { core::ptr::from_ref(self).cast::<u8>().sub(T::OFFSET) }.cast::<T>();
            // SAFETY: it was pending, so one handle was given up for the run that will
            // not happen now: take it back, once.
            drop(unsafe { T::Ref::from_raw(p) });
        }
        was
    }
}

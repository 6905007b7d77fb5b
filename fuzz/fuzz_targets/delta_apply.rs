//! `delta::apply` and `delta::diff` on arbitrary bytes. Input: one length byte N, then N bytes
//! of old value (fewer when the input is short), then the rest.
//!
//! - `apply(old, rest, 1 MiB)` returns (never panics out, never aborts) and allocates no block
//!   larger than the limit allows, whatever size the delta declares;
//! - with `rest` as a new value: `diff(old, new)`, when it gives a delta, gives a smaller one
//!   that `apply` turns back into `new`, and that a limit of one byte less refuses.
//!
//! `apply` contains panics of the fossil-delta crate with `catch_unwind` (delta.rs). libFuzzer's
//! panic hook would abort on those even though they are caught, so this target's hook lets a
//! panic pass only while `apply` runs; a panic anywhere else still aborts as usual.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use diffusion_core::delta;
use libfuzzer_sys::{Corpus, fuzz_target};

const LIMIT: usize = 1 << 20;

/// Records the largest single allocation while `TRACKING` is set.
struct Tracking;

static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACKING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: allocated by `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

thread_local! {
    static IN_APPLY: Cell<bool> = const { Cell::new(false) };
}

/// `delta::apply` with contained panics allowed; a panic that escapes it aborts (with its
/// message) as any other panic does.
fn apply(old: &[u8], delta: &[u8], max_output: usize) -> Result<bytes::Bytes, delta::DeltaError> {
    IN_APPLY.with(|f| f.set(true));
    let out = std::panic::catch_unwind(|| delta::apply(old, delta, max_output));
    IN_APPLY.with(|f| f.set(false));
    match out {
        Ok(out) => out,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panic!("delta::apply let a panic escape: {what}\nold {old:?}\ndelta {delta:?}")
        }
    }
}

fuzz_target!(
    init: {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_APPLY.with(Cell::get) {
                abort_hook(info);
            }
        }));
    },
    |data: &[u8]| -> Corpus {
        let Some((&n, rest)) = data.split_first() else {
            return Corpus::Reject;
        };
        let (old, rest) = rest.split_at(usize::from(n).min(rest.len()));

        LARGEST.store(0, Ordering::Relaxed);
        TRACKING.store(true, Ordering::Relaxed);
        let applied = apply(old, rest, LIMIT);
        TRACKING.store(false, Ordering::Relaxed);
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest <= LIMIT + 64 * 1024,
            "apply allocated a block of {largest} bytes (limit {LIMIT}) for delta {rest:?}"
        );
        if let Ok(out) = &applied {
            assert!(out.len() <= LIMIT);
        }

        if let Some(d) = delta::diff(old, rest) {
            assert!(d.len() < rest.len(), "diff is not smaller than the new value");
            let back = apply(old, &d, rest.len())
                .unwrap_or_else(|e| panic!("diff does not apply: {e}\nold {old:?}\nnew {rest:?}\ndelta {d:?}"));
            assert_eq!(&back[..], rest, "apply(diff) is not the new value\ndelta {d:?}");
            assert!(
                apply(old, &d, rest.len() - 1).is_err(),
                "a limit below the declared size is not refused"
            );
        } else {
            // diff gives nothing for equal values, or when the delta would not be smaller.
            assert!(old == rest || fossil_delta::delta(rest, old).len() >= rest.len());
        }
        Corpus::Keep
    }
);

//! (tests) What each thread allocates: a counting wrapper around the system allocator, for
//! tests that check the work or the memory a step takes. Unlike a timing, a shared machine
//! cannot disturb these counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const` and without destructors: safe to touch from inside the allocator.
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

struct Counting;

fn count(allocated: usize, freed: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + allocated as u64));
    let _ = LIVE.try_with(|live| {
        let now = live.get() + allocated as i64 - freed as i64;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on unchanged to `System`; only thread-locals are added to.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size, layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Bytes this thread has allocated so far.
pub fn so_far() -> u64 {
    ALLOCATED.with(Cell::get)
}

/// Bytes this thread's allocations hold now less what it freed (of anyone's); the change over a
/// step is what the step left allocated.
pub fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// The most this thread's allocations less its frees reached above their level now, while
/// `f` ran (everything `f` allocates and frees on this thread).
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - start).max(0) as u64)
}

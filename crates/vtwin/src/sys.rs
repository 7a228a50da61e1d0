//! The one place with `unsafe` code (the workspace denies it elsewhere):
//! calls into C that no safe wrapper covers. System calls go through
//! `rustix` or `std`.
#![allow(unsafe_code)]

/// Give the allocator's free pages back to the system now (mimalloc
/// purges them lazily, on later allocations).
pub fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers and may run on any thread; it
    // only walks the allocator's own free lists.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

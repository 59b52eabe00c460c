//! pymalloc's arenas side by side while the zygote preloads: CPython's object allocator takes its memory in 1 MiB
//! arenas, each its own `mmap` by default. Mapped one by one between everything else the imports map, few of them
//! share a whole aligned 2 MiB range with a neighbour, so `huge_pages` cannot move most of them into huge pages and
//! every fork copies one page-table entry per 4 KiB of them. Here they are carved one after another out of
//! one 2 MiB-aligned region instead; before the first fork the region's unused tail is given back ([`seal`]), so the
//! kernels' own new arenas are plain `mmap`s again (and their address space holds no reserve).
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Address space reserved for the preload's arenas (untouched pages cost nothing; [`seal`] returns the rest).
const RESERVE: usize = 512 << 20;
/// The alignment of the region: a huge page.
const ALIGN: usize = 2 << 20;

/// The next free byte of the region and its end (both 0 while there is none). CPython calls the allocator with its
/// GIL held, so there is never more than one caller; atomics only make the statics safe to touch.
static NEXT: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);

/// CPython's `PyObjectArenaAllocator` (`Include/cpython/objimpl.h`): the functions pymalloc gets and returns its
/// arenas with.
#[repr(C)]
pub(crate) struct ArenaAllocator {
    ctx: *mut c_void,
    alloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void, *mut c_void, usize),
}

/// Reserves the region and returns the allocator to hand to `PyObject_SetArenaAllocator`; `None` if the region
/// could not be mapped (arenas are then plain `mmap`s, as without this).
pub(crate) fn allocator() -> Option<ArenaAllocator> {
    // SAFETY: a fresh private anonymous mapping, nowhere near memory Rust knows of.
    let start = unsafe {
        libc::mmap(
            ptr::null_mut(),
            RESERVE + ALIGN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if start == libc::MAP_FAILED {
        return None;
    }
    let (start, end) = (start as usize, start as usize + RESERVE + ALIGN);
    let aligned = start.next_multiple_of(ALIGN);
    // The slack before the aligned start and after the reserve's end goes back at once.
    unmap(start, aligned - start);
    unmap(aligned + RESERVE, end - (aligned + RESERVE));
    NEXT.store(aligned, Ordering::Relaxed);
    END.store(aligned + RESERVE, Ordering::Relaxed);
    Some(ArenaAllocator { ctx: ptr::null_mut(), alloc: alloc_arena, free: free_arena })
}

/// Gives back the region's unused tail (rounded up to a huge page, so the last one can still be collapsed) and
/// makes every later arena a plain `mmap`. Returns the bytes of arenas taken from the region.
pub(crate) fn seal() -> usize {
    let (next, end) = (NEXT.load(Ordering::Relaxed), END.load(Ordering::Relaxed));
    if end == 0 {
        return 0;
    }
    let keep = next.next_multiple_of(ALIGN).min(end);
    unmap(keep, end - keep);
    NEXT.store(0, Ordering::Relaxed);
    END.store(0, Ordering::Relaxed);
    // What the region handed out: from its aligned start to `next`.
    next - (end - RESERVE)
}

unsafe extern "C" fn alloc_arena(_ctx: *mut c_void, size: usize) -> *mut c_void {
    let (next, end) = (NEXT.load(Ordering::Relaxed), END.load(Ordering::Relaxed));
    if size % 4096 == 0 && end - next >= size && next != 0 {
        NEXT.store(next + size, Ordering::Relaxed);
        return next as *mut c_void;
    }
    // SAFETY: as CPython's own arena allocator does: a fresh private anonymous mapping.
    let arena = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if arena == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        arena
    }
}

/// An arena from the region or from `mmap` alike: unmapping it gives its memory back (inside the region, that
/// leaves a hole, which is never handed out again).
unsafe extern "C" fn free_arena(_ctx: *mut c_void, arena: *mut c_void, size: usize) {
    unmap(arena as usize, size);
}

fn unmap(at: usize, len: usize) {
    if len > 0 {
        // SAFETY: only ranges of mappings made here, which nothing else refers to once given back.
        unsafe { libc::munmap(at as *mut c_void, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arenas come one after another out of the aligned region until it is sealed, then from `mmap`; every one can
    /// be written and given back.
    #[test]
    fn arenas_are_contiguous_until_sealed() {
        let allocator = allocator().expect("reserving the region");
        let arena = 1 << 20;
        // SAFETY: the allocator's own functions, called as CPython would (one caller at a time).
        let (first, second) =
            unsafe { ((allocator.alloc)(ptr::null_mut(), arena), (allocator.alloc)(ptr::null_mut(), arena)) };
        assert!(!first.is_null() && !second.is_null());
        assert_eq!(first as usize % ALIGN, 0, "the region starts on a huge page");
        assert_eq!(second as usize, first as usize + arena, "side by side");
        assert_eq!(seal(), 2 * arena);
        // SAFETY: as above; each arena is written within its size, then given back once.
        unsafe {
            let third = (allocator.alloc)(ptr::null_mut(), arena);
            assert!(!third.is_null());
            assert!(
                (third as usize) < first as usize || third as usize >= first as usize + ALIGN,
                "not from the region"
            );
            for at in [first, second, third] {
                std::ptr::write_bytes(at as *mut u8, 7, arena);
                (allocator.free)(ptr::null_mut(), at, arena);
            }
        }
    }
}

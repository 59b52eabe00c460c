//! pymalloc's arenas side by side while the zygote preloads: CPython's object allocator takes its memory in 1 MiB
//! arenas, each its own `mmap` by default. Mapped one by one between everything else the imports map, few of them
//! share a whole aligned 2 MiB range with a neighbour, so `huge_pages` cannot move most of them into huge pages and
//! every fork copies one page-table entry per 4 KiB of them. Here they are carved one after another out of one
//! 2 MiB-aligned region instead, and an arena pymalloc gives back stays in the region (its memory returned with
//! `MADV_DONTNEED`, the arena kept for the next request) rather than punching a hole into it. Before the first fork
//! the region's unused tail is given back ([`seal`]): the kernels' own new arenas are plain `mmap`s again (their
//! address space holds no reserve), except those they take back from the region's list of given-back ones.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Address space reserved for the preload's arenas (untouched pages cost nothing; [`seal`] returns the rest).
const RESERVE: usize = 512 << 20;
/// The alignment of the region: a huge page.
const ALIGN: usize = 2 << 20;

/// The region: `[START, LIMIT)` is mapped, `[NEXT, BUMP_END)` not handed out yet, `FREE` the first of the arenas
/// given back (each holds the address of the next in its first word; 0 ends the list), all `ARENA` bytes long (the
/// size of the first arena asked for: pymalloc's are all one size). All 0 while there is no region. CPython calls
/// the allocator with its GIL held, so there is never more than one caller; atomics only make the statics safe.
static START: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);
static BUMP_END: AtomicUsize = AtomicUsize::new(0);
static FREE: AtomicUsize = AtomicUsize::new(0);
static ARENA: AtomicUsize = AtomicUsize::new(0);

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
    let start = map(RESERVE + ALIGN, libc::MAP_NORESERVE)?;
    let aligned = start.next_multiple_of(ALIGN);
    // The slack before the aligned start and after the reserve's end goes back at once.
    unmap(start, aligned - start);
    unmap(aligned + RESERVE, start + RESERVE + ALIGN - (aligned + RESERVE));
    START.store(aligned, Ordering::Relaxed);
    LIMIT.store(aligned + RESERVE, Ordering::Relaxed);
    NEXT.store(aligned, Ordering::Relaxed);
    BUMP_END.store(aligned + RESERVE, Ordering::Relaxed);
    Some(ArenaAllocator { ctx: ptr::null_mut(), alloc: alloc_arena, free: free_arena })
}

/// Gives back the region's unused tail (from the next huge-page boundary on, so the last one can still be
/// collapsed) and hands out no more fresh arenas from it. Returns the bytes of the region in arenas.
pub(crate) fn seal() -> usize {
    let (start, next, limit) =
        (START.load(Ordering::Relaxed), NEXT.load(Ordering::Relaxed), LIMIT.load(Ordering::Relaxed));
    let keep = next.next_multiple_of(ALIGN).min(limit);
    unmap(keep, limit - keep);
    LIMIT.store(keep, Ordering::Relaxed);
    BUMP_END.store(next, Ordering::Relaxed);
    next - start
}

unsafe extern "C" fn alloc_arena(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if ARENA.load(Ordering::Relaxed) == 0 {
        ARENA.store(size, Ordering::Relaxed);
    }
    if size == ARENA.load(Ordering::Relaxed) {
        let free = FREE.load(Ordering::Relaxed);
        if free != 0 {
            // SAFETY: a given-back arena of the region, whose first word `free_arena` wrote.
            FREE.store(unsafe { (free as *const usize).read() }, Ordering::Relaxed);
            return free as *mut c_void;
        }
        let (next, end) = (NEXT.load(Ordering::Relaxed), BUMP_END.load(Ordering::Relaxed));
        if end - next >= size && size % 4096 == 0 {
            NEXT.store(next + size, Ordering::Relaxed);
            return next as *mut c_void;
        }
    }
    map(size, 0).map_or(ptr::null_mut(), |at| at as *mut c_void)
}

/// An arena of the region goes on its list of given-back arenas, its memory returned; any other is unmapped, as
/// CPython's own allocator does.
unsafe extern "C" fn free_arena(_ctx: *mut c_void, arena: *mut c_void, size: usize) {
    let at = arena as usize;
    let in_region = (START.load(Ordering::Relaxed)..LIMIT.load(Ordering::Relaxed)).contains(&at);
    if !in_region || size != ARENA.load(Ordering::Relaxed) {
        unmap(at, size);
        return;
    }
    // SAFETY: the arena is pymalloc's no more; its pages read as zeros after MADV_DONTNEED, and its first word
    // (one page written again) links it into the list.
    unsafe {
        libc::madvise(arena, size, libc::MADV_DONTNEED);
        (arena as *mut usize).write(FREE.load(Ordering::Relaxed));
    }
    FREE.store(at, Ordering::Relaxed);
}

/// A fresh private anonymous read-write mapping of `len` bytes (with extra `flags`), or `None`.
fn map(len: usize, flags: libc::c_int) -> Option<usize> {
    // SAFETY: a new mapping, nowhere near memory Rust knows of.
    let at = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    (at != libc::MAP_FAILED).then_some(at as usize)
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

    /// Arenas come one after another out of the aligned region; one given back is handed out again, in its place
    /// and zeroed; after sealing, fresh ones come from `mmap`; every one can be written and given back.
    #[test]
    fn arenas_stay_side_by_side() {
        let allocator = allocator().expect("reserving the region");
        let arena = 1 << 20;
        let alloc = || {
            // SAFETY: the allocator's own function, called as CPython would (one caller at a time).
            let at = unsafe { (allocator.alloc)(ptr::null_mut(), arena) };
            assert!(!at.is_null());
            at as usize
        };
        // SAFETY (both): as `alloc`; each arena is written within its size, and given back once.
        let fill = |at: usize| unsafe { ptr::write_bytes(at as *mut u8, 7, arena) };
        let give_back = |at: usize| unsafe { (allocator.free)(ptr::null_mut(), at as *mut c_void, arena) };
        let (first, second, third) = (alloc(), alloc(), alloc());
        assert_eq!(first % ALIGN, 0, "the region starts on a huge page");
        assert_eq!((second, third), (first + arena, first + 2 * arena), "side by side");
        [first, second, third].into_iter().for_each(fill);
        give_back(second);
        assert_eq!(alloc(), second, "a given-back arena is the next one handed out");
        // SAFETY: `second` is mapped and was handed out again: its bytes (after the list's link) read as zeros.
        assert_eq!(unsafe { ((second + 4096) as *const u8).read() }, 0, "its old contents are gone");
        assert_eq!(seal(), 3 * arena);
        let fresh = alloc();
        assert!(!(first..first + 2 * ALIGN).contains(&fresh), "after sealing, not from the region");
        give_back(third);
        assert_eq!(alloc(), third, "given-back arenas are still taken again after sealing");
        for at in [first, second, third, fresh] {
            fill(at);
            give_back(at);
        }
    }
}

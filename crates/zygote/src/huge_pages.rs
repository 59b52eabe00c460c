//! Huge pages for the zygote's heap: every sandbox is a fork of the zygote, and a fork copies one page-table entry
//! for each present page of the zygote's private memory (~85 MB of interpreter heap: ~22,000 entries), most of the
//! zygote's work per sandbox. A range mapped by one 2 MiB huge page is one entry. The forks share the huge page
//! like any other; a fork's first write into it gets its own copy of the 4 KiB page written, as before.
#![allow(unsafe_code)]

use std::ffi::c_void;

/// Size of a huge page (x86-64's PMD size).
const HUGE_PAGE: usize = 2 << 20;
/// Pages of 4 KiB in a huge page.
const PAGES: usize = HUGE_PAGE / 4096;
/// A range is collapsed only if at least this many of its pages are present: collapsing fills the others with
/// zeros, memory the zygote would not have had.
const MIN_PRESENT: usize = PAGES - 32;

/// Moves each 2 MiB range of the process's anonymous private memory (its heaps) that is nearly all present into a
/// huge page (`MADV_COLLAPSE`, Linux 6.1+, whatever the system's transparent huge page setting). Best effort: a
/// range the kernel does not collapse stays as it was. Returns how many ranges were collapsed.
pub(crate) fn collapse_heap() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return 0 };
    let mut collapsed = 0;
    for (start, end) in maps.lines().filter_map(anonymous_private_range) {
        let mut at = start.next_multiple_of(HUGE_PAGE);
        while at + HUGE_PAGE <= end {
            if present_pages(at) >= MIN_PRESENT {
                // SAFETY: advice on a range inside one of this process's own mappings; collapsing moves the range
                // into a huge page without changing what it holds.
                collapsed +=
                    usize::from(unsafe { libc::madvise(at as *mut c_void, HUGE_PAGE, libc::MADV_COLLAPSE) } == 0);
            }
            at += HUGE_PAGE;
        }
    }
    collapsed
}

/// The address range of a `/proc/self/maps` line that is anonymous, private and writable (a heap), else `None`.
fn anonymous_private_range(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let (range, perms, inode) = (fields.next()?, fields.next()?, fields.nth(2)?);
    let path = fields.next();
    if perms != "rw-p" || inode != "0" || !matches!(path, None | Some("[heap]")) {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
}

/// How many of the 4 KiB pages of the huge-page-sized range at `at` are present (0 if that cannot be told).
fn present_pages(at: usize) -> usize {
    let mut present = [0u8; PAGES];
    // SAFETY: `present` has one byte for each page of the range, as mincore writes.
    if unsafe { libc::mincore(at as *mut c_void, HUGE_PAGE, present.as_mut_ptr()) } != 0 {
        return 0;
    }
    present.iter().filter(|page| *page & 1 == 1).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only anonymous private writable mappings (heaps) are candidates, with their bounds parsed.
    #[test]
    fn picks_heaps_only() {
        let heap = "5581f1a00000-5581f1e21000 rw-p 00000000 00:00 0                          [heap]";
        assert_eq!(anonymous_private_range(heap), Some((0x5581f1a00000, 0x5581f1e21000)));
        assert_eq!(
            anonymous_private_range("7f0000000000-7f0000400000 rw-p 00000000 00:00 0 "),
            Some((0x7f0000000000, 0x7f0000400000))
        );
        for other in [
            "7ffd3a1e0000-7ffd3a201000 rw-p 00000000 00:00 0                          [stack]",
            "7f1e2c000000-7f1e2c021000 r--p 00000000 00:00 0 ",
            "7f1e2c400000-7f1e2c600000 rw-p 001f5000 08:01 1234                       /usr/lib/libc.so.6",
            "7f1e2c600000-7f1e2c800000 rw-s 00000000 00:05 4321                       /dev/zero (deleted)",
        ] {
            assert_eq!(anonymous_private_range(other), None, "{other}");
        }
    }

    /// A fully written 4 MiB anonymous mapping has at least one whole, present, aligned 2 MiB range, which the
    /// kernel collapses into a huge page (`AnonHugePages` in its smaps grows).
    #[test]
    fn collapses_a_present_heap_range() {
        let mut heap = vec![1u8; 2 * HUGE_PAGE + 4096];
        let start = (heap.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
        assert_eq!(present_pages(start), PAGES);
        assert!(collapse_heap() >= 1);
        let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
        let huge: u64 = smaps
            .lines()
            .find_map(|line| line.strip_prefix("AnonHugePages:"))
            .and_then(|kb| kb.trim().trim_end_matches(" kB").parse().ok())
            .unwrap();
        assert!(huge >= 2048, "no huge page after collapsing: {smaps}");
        heap[0] = 2;
    }
}

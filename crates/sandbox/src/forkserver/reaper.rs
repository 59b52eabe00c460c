//! The pid 1 of a fork server's sandbox: a task that shares the server's memory (so starting it copies nothing,
//! where forking an init copied every page table of a pre-loaded interpreter) and only reaps, in raw system
//! calls on a small stack of its own, until the server kills it.
//!
//! It shares the server's memory but not its descriptors (it closes its copies), credentials or signal handlers,
//! and it never touches the server's data: no allocation, no thread-local (`errno` included), nothing but its
//! stack. All signals are blocked before it starts (SIGKILL aside, which is how it ends); it dies with the server
//! (parent-death signal). Inside the sandbox it is invisible (`/proc` is mounted with `hidepid=2`).
//! Being the namespace's pid 1, it adopts whatever the payload leaves behind, and when it is killed the kernel
//! kills every process left in its namespace.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;

use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::Pid;

/// Stack of one reaper: its loop needs well under a kilobyte.
const STACK_BYTES: usize = 16 * 1024;
/// Reapers alive at once, at most (one per running sandbox, plus the spare).
const SLOTS: usize = 4096;

/// The stacks of the running reapers: one mapping in the server (not inherited by its forks), a slot each.
pub(super) struct Reapers {
    base: *mut u8,
    free: Vec<usize>,
    slots: HashMap<Pid, usize>,
}

impl Reapers {
    /// Reserves the stacks' address space (no memory until used).
    pub(super) fn new() -> nix::Result<Self> {
        let bytes = STACK_BYTES * SLOTS;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing; nothing else refers to it.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), bytes, prot, flags, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        // The server's forks (the payloads) must not get the reapers' stacks.
        // SAFETY: advice on the mapping made above.
        if unsafe { libc::madvise(base, bytes, libc::MADV_DONTFORK) } != 0 {
            return Err(Errno::last());
        }
        Ok(Reapers { base: base.cast(), free: (0..SLOTS).rev().collect(), slots: HashMap::new() })
    }

    /// Starts a reaper as the caller's next child: pid 1 of the pid namespace the caller's children go to. The
    /// caller must be single-threaded.
    pub(super) fn start(&mut self) -> nix::Result<Pid> {
        let slot = self.free.pop().ok_or(Errno::EAGAIN)?;
        // SAFETY: the slot's end is inside the mapping; stacks grow down from it.
        let top = unsafe { self.base.add((slot + 1) * STACK_BYTES) };
        let mut mask = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut mask))?;
        // SAFETY: the child shares this memory but runs only `reap_forever` on its own stack slot, which no one
        // else uses while it lives; glibc's clone wrapper runs no atfork handler and touches no thread state.
        let pid =
            unsafe { libc::clone(reap_forever, top.cast(), libc::CLONE_VM | libc::SIGCHLD, std::ptr::null_mut()) };
        let started = Errno::result(pid);
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
        match started {
            Ok(pid) => {
                self.slots.insert(Pid::from_raw(pid), slot);
                Ok(Pid::from_raw(pid))
            }
            Err(errno) => {
                self.free.push(slot);
                Err(errno)
            }
        }
    }

    /// Frees the stack of a reaper that has been waited for.
    pub(super) fn reaped(&mut self, pid: Pid) -> bool {
        match self.slots.remove(&pid) {
            Some(slot) => {
                self.free.push(slot);
                true
            }
            None => false,
        }
    }
}

/// The reaper's whole life: adopt and reap until killed.
extern "C" fn reap_forever(_: *mut c_void) -> i32 {
    let sigchld: u64 = 1 << (libc::SIGCHLD - 1);
    // SAFETY: plain system calls; the only memory they read is `sigchld` on this stack.
    unsafe {
        // Its descriptor table is a copy of the server's: keep none of them open (pipes must see their ends).
        syscall4(libc::SYS_close_range, 0, u32::MAX as usize, 0, 0);
        syscall4(libc::SYS_prctl, libc::PR_SET_PDEATHSIG as usize, libc::SIGKILL as usize, 0, 0);
        loop {
            // Blocks while there are children; ECHILD when there are none: then wait for one to end.
            let waited = syscall4(libc::SYS_wait4, usize::MAX, 0, libc::__WALL as usize, 0);
            if waited == -(libc::ECHILD as isize) {
                let set = &sigchld as *const u64 as usize;
                syscall4(libc::SYS_rt_sigtimedwait, set, 0, 0, std::mem::size_of::<u64>());
            }
        }
    }
}

/// A system call with up to four arguments that leaves `errno` alone; returns -errno on failure.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall4(number: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for `number`; `syscall` clobbers only rcx and r11.
    unsafe {
        std::arch::asm!("syscall", inlateout("rax") number as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c,
            in("r10") d, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A system call with up to four arguments that leaves `errno` alone; returns -errno on failure.
#[cfg(target_arch = "aarch64")]
unsafe fn syscall4(number: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for `number`; `svc 0` returns in x0.
    unsafe {
        std::arch::asm!("svc 0", in("x8") number, inlateout("x0") a as isize => ret, in("x1") b, in("x2") c,
            in("x3") d, options(nostack));
    }
    ret
}

//! The pid 1 of a fork server's sandbox: a task that shares the server's memory (so starting it copies nothing,
//! where forking an init copied every page table of a pre-loaded interpreter) and only reaps, in raw system
//! calls on a small stack of its own, until the server kills it.
//!
//! It shares the server's memory but not its descriptors (it closes its copies), credentials or signal handlers,
//! and it never touches the server's data: no allocation, no thread-local (`errno` included), nothing but its
//! stack. All signals are blocked before it starts (SIGKILL aside, which is how it ends); it dies with the server
//! (parent-death signal; and a server that died before that signal was set shows as a readable pidfd). Inside the
//! sandbox it is invisible (`/proc` is mounted with `hidepid=2`). Being the namespace's pid 1, it adopts whatever
//! the payload leaves behind, and when it is killed the kernel kills every process left in its namespace.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::Pid;

/// Stack of one reaper: its loop needs well under a kilobyte.
const STACK_BYTES: usize = 16 * 1024;
/// Stacks per mapping: one more is made whenever all are taken.
const SLOTS_PER_MAPPING: usize = 256;

/// The stacks of the running reapers: slots in mappings of the server's (not inherited by its forks).
pub(super) struct Reapers {
    mappings: Vec<*mut u8>,
    free: Vec<usize>,
    slots: HashMap<Pid, usize>,
    /// A pidfd of the process the reapers die with; none where the kernel has no pidfds (before 5.3).
    server: Option<OwnedFd>,
}

impl Reapers {
    /// Stacks for reapers that die with the calling process.
    pub(super) fn new() -> Self {
        Self::dying_with(crate::sys::pidfd_open(nix::unistd::getpid()).ok())
    }

    /// Stacks for reapers that die with the process behind `server`.
    fn dying_with(server: Option<OwnedFd>) -> Self {
        Reapers { mappings: Vec::new(), free: Vec::new(), slots: HashMap::new(), server }
    }

    /// Reserves the address space of `SLOTS_PER_MAPPING` more stacks (no memory until used).
    fn grow(&mut self) -> nix::Result<()> {
        let bytes = STACK_BYTES * SLOTS_PER_MAPPING;
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
            let errno = Errno::last();
            // SAFETY: the mapping made above, which nothing uses yet.
            unsafe { libc::munmap(base, bytes) };
            return Err(errno);
        }
        let first = self.mappings.len() * SLOTS_PER_MAPPING;
        self.mappings.push(base.cast());
        self.free.extend((first..first + SLOTS_PER_MAPPING).rev());
        Ok(())
    }

    /// Starts a reaper as the caller's next child: pid 1 of the pid namespace the caller's children go to. The
    /// caller must be single-threaded.
    pub(super) fn start(&mut self) -> nix::Result<Pid> {
        if self.free.is_empty() {
            self.grow()?;
        }
        let slot = self.free.pop().ok_or(Errno::EAGAIN)?;
        let base = self.mappings[slot / SLOTS_PER_MAPPING];
        // SAFETY: the slot's end is inside its mapping; stacks grow down from it.
        let top = unsafe { base.add((slot % SLOTS_PER_MAPPING + 1) * STACK_BYTES) };
        let mut mask = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut mask))?;
        // The reaper gets the number of the server's pidfd as its argument (-1: none).
        let server = self.server.as_ref().map_or(-1, |fd| fd.as_raw_fd()) as isize as *mut c_void;
        // SAFETY: the child shares this memory but runs only `reap_forever` on its own stack slot, which no one
        // else uses while it lives; glibc's clone wrapper runs no atfork handler and touches no thread state.
        let pid = unsafe { libc::clone(reap_forever, top.cast(), libc::CLONE_VM | libc::SIGCHLD, server) };
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

    /// Kills a reaper, waits for it and frees its stack (a reaper whose namespace has no other process left).
    pub(super) fn end(&mut self, pid: Pid) {
        super::init_process::end(pid);
        self.reaped(pid);
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

/// The reaper's whole life: adopt and reap until killed. `server` is the number of a pidfd of the server, or -1.
extern "C" fn reap_forever(server: *mut c_void) -> i32 {
    let sigchld: u64 = 1 << (libc::SIGCHLD - 1);
    // SAFETY: plain system calls; the only memory they touch is `sigchld`, `server_ended` and `now` on this stack.
    unsafe {
        syscall4(libc::SYS_prctl, libc::PR_SET_PDEATHSIG as usize, libc::SIGKILL as usize, 0, 0);
        // A server that died before the line above sent no signal; its pidfd is readable once it has ended.
        // (`getppid` cannot tell: the parent is outside this pid namespace, so it reads 0 either way.)
        let server = server as isize as i32;
        if server >= 0 {
            let mut server_ended = libc::pollfd { fd: server, events: libc::POLLIN, revents: 0 };
            let now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            let ready = syscall4(libc::SYS_ppoll, &raw mut server_ended as usize, 1, &raw const now as usize, 0);
            if ready > 0 {
                syscall4(libc::SYS_exit_group, 0, 0, 0, 0);
            }
        }
        // Its descriptor table is a copy of the server's: keep none of them open (pipes must see their ends).
        syscall4(libc::SYS_close_range, 0, u32::MAX as usize, 0, 0);
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

#[cfg(test)]
mod tests {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

    use super::*;

    /// Each reaper runs its loop on a stack of its own, past the first mapping too; a reaped one's stack is
    /// taken again.
    #[test]
    fn reapers_run_on_stacks_of_their_own() {
        let mut reapers = Reapers::new();
        let pids: Vec<Pid> = (0..SLOTS_PER_MAPPING + 2).map(|_| reapers.start().unwrap()).collect();
        assert_eq!(reapers.mappings.len(), 2);
        // Every one of them waits (for a child or SIGCHLD), none has crashed.
        std::thread::sleep(std::time::Duration::from_millis(200));
        for pid in &pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            assert!(stat.rsplit(") ").next().unwrap().starts_with('S'), "{stat}");
        }
        for pid in &pids {
            kill(*pid, Signal::SIGKILL).unwrap();
            assert_eq!(waitpid(*pid, None).unwrap(), WaitStatus::Signaled(*pid, Signal::SIGKILL, false));
            assert!(reapers.reaped(*pid));
        }
        assert!(!reapers.reaped(pids[0]), "already freed");
        assert_eq!(reapers.free.len(), 2 * SLOTS_PER_MAPPING);
        let again = reapers.start().unwrap();
        assert_eq!(reapers.mappings.len(), 2, "a freed stack is taken again");
        kill(again, Signal::SIGKILL).unwrap();
        waitpid(again, None).unwrap();
    }

    /// A reaper whose server ended before the reaper could ask for the parent-death signal ends by itself (else
    /// it would sleep forever, holding the server's whole memory); one whose server lives stays.
    #[test]
    fn a_reaper_whose_server_is_gone_ends_by_itself() {
        let mut server = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let server_fd = crate::sys::pidfd_open(Pid::from_raw(server.id() as i32)).unwrap();
        let mut reapers = Reapers::dying_with(Some(server_fd));
        let staying = reapers.start().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(waitpid(staying, Some(WaitPidFlag::WNOHANG)).unwrap(), WaitStatus::StillAlive);

        server.kill().unwrap();
        server.wait().unwrap();
        let ending = reapers.start().unwrap();
        let ended = (0..500).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let status = waitpid(ending, Some(WaitPidFlag::WNOHANG)).unwrap();
            (status != WaitStatus::StillAlive).then_some(status)
        });
        if ended.is_none() {
            kill(ending, Signal::SIGKILL).unwrap();
        }
        assert_eq!(ended, Some(WaitStatus::Exited(ending, 0)), "it ended by itself within 5 s");
        kill(staying, Signal::SIGKILL).unwrap();
        waitpid(staying, None).unwrap();
    }
}

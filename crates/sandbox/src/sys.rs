//! The crate's `unsafe` system calls: those nix does not wrap (fork, capabilities, interface flags, pidfds, _exit,
//! the argument area). The fork server's reaper (`forkserver::reaper`) is the only other `unsafe` code.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

/// Forks the calling process.
///
/// Only the helper and the sandbox's init call this, and both are single-threaded (the helper is a freshly exec'd
/// process that starts no threads), so the child may do anything, not just async-signal-safe calls.
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: callers are single-threaded processes (see above): no lock can be held by another thread at the fork.
    unsafe { nix::unistd::fork() }
}

/// Ends the process at once, without running exit handlers or flushing stdio buffers inherited from the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Drops every capability from the bounding set, so nothing exec'd later can ever regain one.
pub(crate) fn drop_bounding_set() -> nix::Result<()> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes the capability number as an integer argument and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            match Errno::last() {
                // Past the kernel's last capability.
                Errno::EINVAL => return Ok(()),
                errno => return Err(errno),
            }
        }
    }
    Ok(())
}

/// Clears the ambient capability set.
pub(crate) fn clear_ambient_caps() -> nix::Result<()> {
    // SAFETY: integer arguments only; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    Errno::result(rc).map(drop)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties the effective, permitted and inheritable capability sets of the calling thread.
pub(crate) fn clear_capabilities() -> nix::Result<()> {
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads one header and two data structs (version 3 layout), both valid for the whole call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// Sets `IFF_UP` on the interface `name` (used for `lo` in a fresh network namespace).
pub(crate) fn interface_up(name: &str) -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(Errno::EINVAL);
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills `req` (a valid, NUL-terminated ifreq) and touches nothing else.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the kernel has just written ifru_flags, the union member SIOCGIFFLAGS fills.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`, valid for the call.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// Opens a pidfd for `pid`, so later signals cannot hit a recycled pid.
pub(crate) fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) })?;
    // SAFETY: on success the return value is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the process behind `pidfd`.
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> nix::Result<()> {
    let null = std::ptr::null::<libc::siginfo_t>();
    // SAFETY: a valid pidfd, a signal number, a NULL siginfo (allowed) and flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal as i32, null, 0) };
    Errno::result(rc).map(drop)
}

/// Marks every fd from 3 up close-on-exec, so nothing the helper inherited reaches the payload.
pub(crate) fn cloexec_inherited_fds() -> nix::Result<()> {
    let flags = libc::CLOSE_RANGE_CLOEXEC as libc::c_uint;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds; it closes nothing and touches no memory.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, flags) };
    Errno::result(rc).map(drop)
}

/// Closes every fd from 3 up except those in `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) -> nix::Result<()> {
    let mut keep: Vec<libc::c_uint> = keep.iter().filter(|fd| **fd >= 3).map(|fd| *fd as libc::c_uint).collect();
    keep.sort_unstable();
    let mut first: libc::c_uint = 3;
    for fd in keep {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, libc::c_uint::MAX)
}

fn close_range(first: libc::c_uint, last: libc::c_uint) -> nix::Result<()> {
    // SAFETY: close_range closes descriptors in [first, last]; the callers own none of them any more (the process
    // is a fresh fork about to become the payload), so no live Rust object is left with a closed fd it still uses.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    Errno::result(rc).map(drop)
}

/// `struct prctl_mm_map` of `<linux/prctl.h>`.
#[repr(C)]
struct MmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// Makes `/proc/self/comm` (what `ps` and `top` show) the file name of `program`, cut to the kernel's 15 bytes,
/// as an exec of it would have.
pub(crate) fn set_comm(program: &str) -> nix::Result<()> {
    let name = std::path::Path::new(program).file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
    let name = std::ffi::CString::new(&name[..name.len().min(15)]).map_err(|_| Errno::EINVAL)?;
    nix::sys::prctl::set_name(&name)
}

/// Makes `/proc/self/cmdline` show `argv`, as an exec of it would have: points the kernel's record of the
/// argument area at a buffer that lives as long as the process (`PR_SET_MM_MAP`, which unlike the single-field
/// `PR_SET_MM` calls needs no `CAP_SYS_RESOURCE`; every other field is passed back unchanged).
pub(crate) fn set_cmdline(argv: &[String]) -> nix::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|_| Errno::EIO)?;
    // Fields after the command name, which is in parentheses and may hold spaces; field n is at index n - 3.
    let fields: Vec<u64> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let field = |n: usize| fields.get(n - 3).copied().ok_or(Errno::EIO);
    let mut area = Vec::new();
    for arg in argv {
        area.extend_from_slice(arg.as_bytes());
        area.push(0);
    }
    let area: &'static [u8] = Box::leak(area.into_boxed_slice());
    // SAFETY: sbrk(0) only returns the current program break.
    let brk = unsafe { libc::sbrk(0) } as u64;
    let map = MmMap {
        start_code: field(26)?,
        end_code: field(27)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        brk,
        start_stack: field(28)?,
        arg_start: area.as_ptr() as u64,
        arg_end: area.as_ptr() as u64 + area.len() as u64,
        env_start: field(50)?,
        env_end: field(51)?,
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    };
    let size = std::mem::size_of::<MmMap>() as libc::c_ulong;
    // SAFETY: the kernel reads `size` bytes of `map`, valid for the call; it records the addresses, of which the
    // argument area is a leaked buffer that is never freed; auxv_size 0 and exe_fd -1 leave those unchanged.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP as libc::c_ulong,
            &map as *const MmMap,
            size,
            0 as libc::c_ulong,
        )
    };
    Errno::result(rc).map(drop)
}

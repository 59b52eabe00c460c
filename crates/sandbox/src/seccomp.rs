//! The payload's seccomp filter: a deny list (everything else is allowed, since the payload is a whole CPython
//! with numpy, zeromq and subprocesses). Denied calls fail with `EPERM`, so Python raises a clean `OSError`
//! instead of dying. Two filters are stacked: [`abi_guard`] (hand-written: native arch only, no x32, no `clone3`)
//! and [`deny_list`] (compiled by `seccompiler` from the plain data below). Most of these already fail for an
//! unprivileged uid without capabilities; the filter keeps them away from kernel code paths altogether.

use std::collections::BTreeMap;

use libc::*;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A group of syscalls denied outright, and why.
pub(crate) struct Group {
    /// One line: why the payload must not have these.
    #[cfg_attr(not(test), expect(dead_code, reason = "documentation, checked by the tests"))]
    pub(crate) why: &'static str,
    /// `(name, number)` on the native arch.
    pub(crate) syscalls: &'static [(&'static str, c_long)],
}

/// Everything denied unconditionally, with `EPERM`.
pub(crate) const DENIED: &[Group] = &[
    Group {
        why: "the mount table is the sandbox's wall: no (new-API) mounts, pivots or chroots",
        syscalls: &[
            ("mount", SYS_mount),
            ("umount2", SYS_umount2),
            ("pivot_root", SYS_pivot_root),
            ("chroot", SYS_chroot),
            ("fsopen", SYS_fsopen),
            ("fsmount", SYS_fsmount),
            ("fsconfig", SYS_fsconfig),
            ("fspick", SYS_fspick),
            ("move_mount", SYS_move_mount),
            ("open_tree", SYS_open_tree),
            ("mount_setattr", SYS_mount_setattr),
        ],
    },
    Group {
        why: "new namespaces (user namespaces above all) are the classic door to root-only kernel code",
        syscalls: &[("unshare", SYS_unshare), ("setns", SYS_setns)],
    },
    Group {
        why: "no reading or steering other processes' memory, not even the payload's own children",
        syscalls: &[
            ("ptrace", SYS_ptrace),
            ("process_vm_readv", SYS_process_vm_readv),
            ("process_vm_writev", SYS_process_vm_writev),
            ("pidfd_getfd", SYS_pidfd_getfd),
        ],
    },
    Group {
        why: "large, bug-prone kernel interfaces code never needs: eBPF, perf, io_uring, userfaultfd",
        syscalls: &[
            ("bpf", SYS_bpf),
            ("perf_event_open", SYS_perf_event_open),
            ("userfaultfd", SYS_userfaultfd),
            ("io_uring_setup", SYS_io_uring_setup),
            ("io_uring_enter", SYS_io_uring_enter),
            ("io_uring_register", SYS_io_uring_register),
        ],
    },
    Group {
        why: "kernel keyrings are not namespaced: keys could leak between sandboxes",
        syscalls: &[("keyctl", SYS_keyctl), ("add_key", SYS_add_key), ("request_key", SYS_request_key)],
    },
    Group {
        why: "file handles bypass path lookup (and so the mount view and landlock)",
        syscalls: &[("open_by_handle_at", SYS_open_by_handle_at), ("name_to_handle_at", SYS_name_to_handle_at)],
    },
    Group {
        why: "whole-machine administration: modules, kexec, reboot, swap, accounting, quotas, the kernel log",
        syscalls: &[
            ("kexec_load", SYS_kexec_load),
            ("kexec_file_load", SYS_kexec_file_load),
            ("init_module", SYS_init_module),
            ("finit_module", SYS_finit_module),
            ("delete_module", SYS_delete_module),
            ("reboot", SYS_reboot),
            ("swapon", SYS_swapon),
            ("swapoff", SYS_swapoff),
            ("acct", SYS_acct),
            ("quotactl", SYS_quotactl),
            ("syslog", SYS_syslog),
            ("fanotify_init", SYS_fanotify_init),
            ("vhangup", SYS_vhangup),
        ],
    },
    Group {
        why: "the clock is the host's: no setting or slewing it",
        syscalls: &[
            ("settimeofday", SYS_settimeofday),
            ("clock_settime", SYS_clock_settime),
            ("clock_adjtime", SYS_clock_adjtime),
            ("adjtimex", SYS_adjtimex),
        ],
    },
    #[cfg(target_arch = "x86_64")]
    Group {
        why: "x86 port I/O and obsolete calls no current program uses (create_module is 174: libc has no constant)",
        syscalls: &[
            ("iopl", SYS_iopl),
            ("ioperm", SYS_ioperm),
            ("create_module", 174),
            ("nfsservctl", SYS_nfsservctl),
            ("uselib", SYS_uselib),
            ("ustat", SYS_ustat),
            ("sysfs", SYS_sysfs),
            ("_sysctl", SYS__sysctl),
            ("lookup_dcookie", SYS_lookup_dcookie),
        ],
    },
];

/// Namespace flags `clone` may not carry (`CLONE_NEWTIME` is 0x80, inside `clone`'s exit-signal byte: only
/// `clone3` and `unshare` take it, and both are denied).
pub(crate) const CLONE_NAMESPACES: &[(&str, c_int)] = &[
    ("CLONE_NEWUSER", CLONE_NEWUSER),
    ("CLONE_NEWNS", CLONE_NEWNS),
    ("CLONE_NEWPID", CLONE_NEWPID),
    ("CLONE_NEWNET", CLONE_NEWNET),
    ("CLONE_NEWIPC", CLONE_NEWIPC),
    ("CLONE_NEWUTS", CLONE_NEWUTS),
    ("CLONE_NEWCGROUP", CLONE_NEWCGROUP),
];

/// Socket families the payload may open: unix sockets (zeromq ipc, multiprocessing), TCP/UDP on `lo`, and
/// netlink for [`NETLINK_PROTOCOL`] only. Packet sockets and the rest are out, and so are raw IP sockets
/// (type & 0xf == SOCK_RAW).
pub(crate) const SOCKET_FAMILIES: &[c_int] = &[AF_UNIX, AF_INET, AF_INET6, AF_NETLINK];

/// The one netlink protocol allowed: `NETLINK_ROUTE`, which glibc's `getifaddrs`/`if_nameindex` use. libzmq
/// aborts the kernel (ip_resolver.cpp) when `getifaddrs` fails, as ipykernel binds its iopub pipe to
/// `tcp://127.0.0.1`. Read-only here: changing anything needs `CAP_NET_ADMIN`, and the only interface is `lo`.
/// Every other protocol (netfilter, xfrm, audit, uevents, sock_diag, ...) is denied.
pub(crate) const NETLINK_PROTOCOL: c_int = NETLINK_ROUTE;

/// `personality` values allowed: `PER_LINUX` and the query `0xffffffff`; flags such as `ADDR_NO_RANDOMIZE` are out.
pub(crate) const PERSONALITIES: &[u64] = &[0, 0xffff_ffff];

/// ioctl requests denied on any fd: pushing input into a terminal (TIOCSTI) and the Linux console (TIOCLINUX).
pub(crate) const IOCTLS: &[u64] = &[0x5412, 0x541c];

/// The native arch as seccompiler names it and its `AUDIT_ARCH_*` value (`EM_*` | 64-bit | little-endian).
#[cfg(target_arch = "x86_64")]
const ARCH: (TargetArch, u32) = (TargetArch::x86_64, 62 | 0xc000_0000);
#[cfg(target_arch = "aarch64")]
const ARCH: (TargetArch, u32) = (TargetArch::aarch64, 183 | 0xc000_0000);

/// x32 syscalls arrive with the x86-64 audit arch and this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Why the filter could not be built (a bug: the data above is fixed).
#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter: {0}")]
pub(crate) struct BuildError(String);

/// Both programs, in the order they are installed.
pub(crate) fn programs() -> Result<[BpfProgram; 2], BuildError> {
    // Built once per process: a fork server builds them before forking, so its sandboxes only copy them.
    static BUILT: std::sync::OnceLock<[BpfProgram; 2]> = std::sync::OnceLock::new();
    if let Some(built) = BUILT.get() {
        return Ok(built.clone());
    }
    let built = [abi_guard(), deny_list()?];
    Ok(BUILT.get_or_init(|| built).clone())
}

/// Installs `programs` on the calling thread (which must have `no_new_privs`): everything it execs keeps them.
pub(crate) fn apply(programs: &[BpfProgram]) -> Result<(), seccompiler::Error> {
    programs.iter().try_for_each(|p| seccompiler::apply_filter(p))
}

/// Hand-written, since seccompiler matches exact numbers only: kills a foreign arch, and answers `ENOSYS` for any
/// x32 call and for `clone3` (its flags sit in a struct a filter cannot read; glibc then falls back to `clone`,
/// whose flags [`deny_list`] checks).
pub(crate) fn abi_guard() -> BpfProgram {
    const LD_W_ABS: u16 = (BPF_LD | BPF_W | BPF_ABS) as u16;
    const JEQ: u16 = (BPF_JMP | BPF_JEQ | BPF_K) as u16;
    const JGE: u16 = (BPF_JMP | BPF_JGE | BPF_K) as u16;
    const RET: u16 = (BPF_RET | BPF_K) as u16;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let enosys = SECCOMP_RET_ERRNO | ENOSYS as u32;
    let mut program = vec![
        // seccomp_data: nr at offset 0, arch at offset 4.
        ins(LD_W_ABS, 0, 0, 4),
        ins(JEQ, 1, 0, ARCH.1),
        ins(RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
        ins(LD_W_ABS, 0, 0, 0),
        ins(JEQ, 0, 1, SYS_clone3 as u32),
        ins(RET, 0, 0, enosys),
    ];
    if cfg!(target_arch = "x86_64") {
        program.extend([ins(JGE, 0, 1, X32_SYSCALL_BIT), ins(RET, 0, 0, enosys)]);
    }
    program.push(ins(RET, 0, 0, SECCOMP_RET_ALLOW));
    program
}

/// The `EPERM` filter: [`DENIED`] outright, plus `clone` with namespace flags, `socket` outside
/// [`SOCKET_FAMILIES`] or raw, `personality` outside [`PERSONALITIES`], and `ioctl` with [`IOCTLS`].
pub(crate) fn deny_list() -> Result<BpfProgram, BuildError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED.iter().flat_map(|g| g.syscalls) {
        rules.insert(*nr, Vec::new());
    }
    let clone = CLONE_NAMESPACES
        .iter()
        .map(|(_, flag)| rule(vec![cond(0, SeccompCmpOp::MaskedEq(*flag as u64), *flag as u64)?]))
        .collect::<Result<_, _>>()?;
    rules.insert(SYS_clone, clone);
    let other_family =
        SOCKET_FAMILIES.iter().map(|f| cond(0, SeccompCmpOp::Ne, *f as u64)).collect::<Result<_, _>>()?;
    let other_netlink =
        vec![cond(0, SeccompCmpOp::Eq, AF_NETLINK as u64)?, cond(2, SeccompCmpOp::Ne, NETLINK_PROTOCOL as u64)?];
    let mut socket = vec![rule(other_family)?, rule(other_netlink)?];
    for family in [AF_INET, AF_INET6] {
        let raw = cond(1, SeccompCmpOp::MaskedEq(0xf), SOCK_RAW as u64)?;
        socket.push(rule(vec![cond(0, SeccompCmpOp::Eq, family as u64)?, raw])?);
    }
    rules.insert(SYS_socket, socket);
    let other_persona = PERSONALITIES.iter().map(|p| cond(0, SeccompCmpOp::Ne, *p)).collect::<Result<_, _>>()?;
    rules.insert(SYS_personality, vec![rule(other_persona)?]);
    let ioctls = IOCTLS.iter().map(|r| rule(vec![cond(1, SeccompCmpOp::Eq, *r)?])).collect::<Result<_, _>>()?;
    rules.insert(SYS_ioctl, ioctls);
    compile(rules, EPERM)
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: c_int) -> Result<BpfProgram, BuildError> {
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), ARCH.0).map_err(err)?;
    filter.try_into().map_err(err)
}

fn err(error: seccompiler::BackendError) -> BuildError {
    BuildError(error.to_string())
}

/// A condition on the low 32 bits of argument `arg` (all of an `int`; flags and requests fit in them too).
fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, BuildError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(err)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, BuildError> {
    SeccompRule::new(conditions).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both programs build, fit the kernel's 4096-instruction cap, and name each syscall once.
    #[test]
    fn programs_build() {
        let [guard, deny] = programs().unwrap();
        assert_eq!(guard.last().unwrap().k, SECCOMP_RET_ALLOW);
        assert!(deny.len() < 4096, "{} instructions", deny.len());
        let mut numbers: Vec<_> = DENIED.iter().flat_map(|g| g.syscalls).map(|(_, nr)| *nr).collect();
        let count = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), count, "a syscall is listed twice");
        for special in [SYS_clone, SYS_clone3, SYS_socket, SYS_personality, SYS_ioctl] {
            assert!(!numbers.contains(&special), "{special} is filtered by argument, not outright");
        }
        assert!(DENIED.iter().all(|g| !g.why.is_empty() && !g.syscalls.is_empty()));
    }
}

//! The kernel-surface attempts: raw system calls the seccomp filter must refuse (bpf, io_uring, keyctl, ...).

use super::checks::syscalls_refused;
use super::{attempt, Attempt};

pub(super) fn attempts() -> Vec<Attempt> {
    let calls: &[(&'static str, &'static str)] = &[
        // bpf(BPF_MAP_CREATE) of an array map.
        ("bpf", "attr = ctypes.create_string_buffer(72)\nstruct.pack_into('IIII', attr, 0, 2, 4, 4, 1)\nprint(syscall(321, 0, attr, 72))"),
        // perf_event_open of a software clock on itself.
        ("perf_event_open", "attr = ctypes.create_string_buffer(128)\nstruct.pack_into('IIQ', attr, 0, 1, 64, 0)\nstruct.pack_into('Q', attr, 40, 1 | 32 | 64)\nprint(syscall(298, attr, 0, -1, -1, 0))"),
        // keyctl(KEYCTL_GET_KEYRING_ID, session keyring, create).
        ("keyctl", "print(syscall(250, 0, -3, 1))"),
        // add_key of a user key to the process keyring.
        ("add_key", "print(syscall(248, b'user', b'escape', b'x', 1, -2))"),
        // userfaultfd, plain and user-mode-only.
        ("userfaultfd", "print(syscall(323, 0o2000000))\nprint(syscall(323, 0o2000000 | 1))"),
        // io_uring_setup with one entry.
        ("io_uring_setup", "params = ctypes.create_string_buffer(120)\nprint(syscall(425, 1, params))"),
        // kexec_load of nothing.
        ("kexec_load", "print(syscall(246, 0, 0, None, 0))"),
        // init_module of an empty image.
        ("init_module", "print(syscall(175, None, 0, b''))"),
        // finit_module from /dev/null.
        ("finit_module", "print(syscall(313, os.open('/dev/null', os.O_RDONLY), b'', 0))"),
        // personality(ADDR_NO_RANDOMIZE) (restored if it worked).
        ("personality", "line = syscall(135, 0x0040000)\nprint(line)\nif not line.startswith('SYSCALL -1'):\n    libc.syscall(ctypes.c_long(135), ctypes.c_long(int(line.split()[1])))"),
        // open_by_handle_at with a forged handle.
        ("open_by_handle_at", "handle = ctypes.create_string_buffer(16)\nstruct.pack_into('Ii', handle, 0, 8, 1)\nprint(syscall(304, -100, handle, 0))"),
        // setns into its own mount and network namespaces.
        ("setns", "print(syscall(308, os.open('/proc/self/ns/mnt', os.O_RDONLY), 0))\nprint(syscall(308, os.open('/proc/self/ns/net', os.O_RDONLY), 0))"),
        // unshare(CLONE_NEWNS | CLONE_NEWNET).
        ("unshare", "print(syscall(272, 0x20000 | 0x40000000))"),
        // Keyctl through the x32 ABI number (a classic filter bypass).
        ("x32 keyctl", "print(syscall(0x40000000 | 250, 0, -3, 1))"),
        // fsopen of a tmpfs (the new mount API).
        ("fsopen", "print(syscall(430, b'tmpfs', 0))"),
        // syslog(SYSLOG_ACTION_READ_ALL): the kernel log.
        ("syslog", "buf = ctypes.create_string_buffer(4096)\nprint(syscall(103, 3, buf, 4096))"),
        // acct turning on process accounting.
        ("acct", "print(syscall(163, b'/tmp/acct'))"),
    ];
    calls.iter().map(|(name, code)| attempt("kernel", name, *code, syscalls_refused())).collect()
}

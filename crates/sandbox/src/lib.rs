//! Linux sandboxes for kernels: the only crate with `unsafe`, the only one that knows namespaces, mounts and cgroups.
//!
//! A sandbox is described by a [`Policy`] (plain data) and started by [`spawn`], which runs a helper process (a
//! fresh, single-threaded exec of a binary that calls [`exec_main`]) so nothing forks inside the gateway's tokio
//! process. The helper joins the sandbox's cgroup, unshares the cgroup, mount, uts, ipc, net and pid namespaces
//! and forks the sandbox's pid 1, which builds a private read-only root, brings up `lo` (the only interface),
//! and forks the payload as an unprivileged uid with no capabilities and `no_new_privs`. A [`ForkServer`] starts
//! the same sandboxes from a long-lived pre-loaded process instead, with one fork each: the payload runs
//! in-process as the sandbox's first process, under a pid 1 that shares the server's memory and only reaps.
//!
//! ```no_run
//! # async fn run() -> Result<(), sandbox::Error> {
//! let policy = sandbox::Policy::builder("sbx-1a2b")
//!     .identity(20_001, 20_001)
//!     .root_dir("/var/lib/code-interpreter/roots/sbx-1a2b")
//!     .rw_bind("/var/lib/code-interpreter/sessions/sbx-1a2b", "/run/kernel")
//!     .env("HOME", "/sandbox")
//!     .argv(["/bin/sh", "-c", "echo hi"])
//!     .memory_limit(512 << 20)
//!     .cgroup_parent("code-interpreter-1a2b3c4d")
//!     .build()?;
//! let mut helper = tokio::process::Command::new("/proc/self/exe");
//! helper.arg("__sandbox-exec");
//! let sandbox = sandbox::spawn(helper, &policy).await?;
//! assert_eq!(sandbox.wait().await, sandbox::Termination::Exited(0));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`policy`]: `Policy`, its builder and validation.
//! - `spawn`: the gateway side: [`spawn`], [`Sandbox`], [`cleanup_stale`].
//! - `helper`: [`exec_main`], the helper process: cgroup join, namespaces (fixed order), fork of init.
//! - `init`: the sandbox's pid 1: root setup, hostname, loopback, payload start, reaping.
//! - `mounts`: the root filesystem as an ordered plan of steps, then applied.
//! - `pipe`: whole reads and writes on the pipes between those processes.
//! - `payload`: identity drop (groups, gid, uid, capabilities, no_new_privs), rlimits, the walls below, exec.
//! - `seccomp`: the payload's syscall deny list (plain data) and its BPF programs.
//! - `fs_rules`: the payload's landlock ruleset: write only to its tmpfs mounts, rw binds and a few devices.
//! - [`cgroups`]: `CgroupDriver` / `Cgroup` traits, v1 and v2 drivers, `detect()`.
//! - `status`: [`Termination`] and the exit-code encoding.
//! - [`forkserver`]: the same sandboxes forked from a long-lived server whose payload runs in-process (a zygote).
//! - `sys`: the `unsafe` system calls (fork, capabilities, interface flags, pidfds); the fork server's reaper is
//!   the only other `unsafe` code.
//! - `error`: [`Error`].

pub mod cgroups;
mod error;
pub mod forkserver;
mod fs_rules;
mod helper;
mod init;
mod mounts;
mod payload;
mod pipe;
pub mod policy;
mod seccomp;
mod spawn;
mod status;
mod sys;

pub use error::Error;
pub use forkserver::ForkServer;
pub use helper::exec_main;
pub use policy::{Bind, Limits, OwnedDir, Policy, PolicyBuilder, PolicyError, Rlimits, TmpfsSizes};
pub use spawn::{cleanup_stale, spawn, Sandbox};
pub use status::Termination;

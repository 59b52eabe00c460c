//! `KernelPolicy`: the sandbox policy every kernel gets from the configuration, whichever launcher starts it, and
//! the environment its interpreter runs with.

use std::path::Path;

use sandbox::{Policy, TmpfsSizes};
use sha2::{Digest, Sha256};

use super::session_dir::SessionDir;
use super::LaunchError;
use crate::config::Config;
use crate::kernel_env::{KernelEnv, KERNEL_MODULE};

/// Where the kernel virtualenv is mounted inside a sandbox (and inside the zygote's root).
pub(super) const ENV_IN_SANDBOX: &str = "/opt/kernel-env";
/// Where the session's `run/` directory is mounted inside a sandbox.
pub(super) const RUN_IN_SANDBOX: &str = "/run/kernel";
/// IPython's directory inside a sandbox: out of /sandbox, which stays the user's files only (and cheap to walk).
const IPYTHON_DIR: &str = "/tmp/.ipython";
/// The directories of IPython's profile, with the modes its `ProfileDir.check_dirs` wants them to have: made by the
/// sandbox, a kernel's start finds them (making them took it ~0.7 ms of CPU and ~120 page faults). Without its
/// `README` in `startup`, which IPython only copies into a directory it made itself.
const IPYTHON_PROFILE_DIRS: &[(&str, u32)] = &[
    ("", 0o755),
    ("/profile_default", 0o755),
    ("/profile_default/security", 0o700),
    ("/profile_default/log", 0o755),
    ("/profile_default/pid", 0o700),
    ("/profile_default/startup", 0o755),
];
/// How far under the memory limit the address-space limit sits.
const ADDRESS_SPACE_HEADROOM: u64 = 32 << 20;

/// The configured limits and mounts of a kernel sandbox.
pub(super) struct KernelPolicy {
    pub(super) env: KernelEnv,
    /// cgroup directory of this data directory's sandboxes, so a restart finds an earlier run's leftovers.
    pub(super) cgroup_parent: String,
    uid_base: u32,
    memory_bytes: u64,
    pids_max: u64,
    cpu_millicores: u64,
    tmpfs: TmpfsSizes,
    /// `RLIMIT_AS`: just under the memory limit, so a big allocation raises `MemoryError` before an OOM kill.
    address_space: u64,
    open_files: u64,
}

/// The cgroup parent name of the sandboxes of the service whose data directory is `data_dir`.
pub fn cgroup_parent_for(data_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("code-interpreter-{hex}")
}

impl KernelPolicy {
    pub(super) fn new(config: &Config, env: KernelEnv) -> KernelPolicy {
        KernelPolicy {
            env,
            cgroup_parent: cgroup_parent_for(&config.data_dir),
            uid_base: config.uid_base,
            memory_bytes: config.memory_limit_mib << 20,
            pids_max: config.pids_limit,
            cpu_millicores: (config.cpu_limit_cores * 1000.0).round() as u64,
            tmpfs: TmpfsSizes {
                tmp: config.tmp_size_mib << 20,
                sandbox: config.sandbox_size_mib << 20,
                dev_shm: 64 << 20,
            },
            address_space: (config.memory_limit_mib << 20).saturating_sub(ADDRESS_SPACE_HEADROOM),
            open_files: config.open_files_limit,
        }
    }

    /// The uid of sandbox slot `slot`.
    pub(super) fn uid(&self, slot: usize) -> u32 {
        self.uid_base + slot as u32
    }

    /// The venv's interpreter as seen inside a sandbox.
    pub(super) fn python(&self) -> std::path::PathBuf {
        Path::new(ENV_IN_SANDBOX).join("bin/python")
    }

    /// The kernel's command line (the same for every kernel: the connection file is at the same place in each).
    pub(super) fn kernel_argv(&self) -> Vec<String> {
        vec![
            self.python().to_string_lossy().into_owned(),
            "-m".into(),
            KERNEL_MODULE.into(),
            "-f".into(),
            format!("{RUN_IN_SANDBOX}/kernel.json"),
            "--HistoryManager.hist_file=:memory:".into(),
        ]
    }

    /// The kernel's whole environment (nothing else is inherited).
    pub(super) fn kernel_vars(&self) -> Vec<(String, String)> {
        let fixed = [
            ("PATH", format!("{ENV_IN_SANDBOX}/bin:/usr/local/bin:/usr/bin:/bin")),
            ("HOME", "/sandbox".into()),
            ("USER", "sandbox".into()),
            ("TMPDIR", "/tmp".into()),
            ("LANG", "C.UTF-8".into()),
            ("MPLCONFIGDIR", "/tmp/mpl".into()),
            ("IPYTHONDIR", IPYTHON_DIR.into()),
            ("MPLBACKEND", "module://matplotlib_inline.backend_inline".into()),
            ("XDG_CACHE_HOME", "/tmp/.cache".into()),
            ("OPENBLAS_NUM_THREADS", "1".into()),
            ("OMP_NUM_THREADS", "1".into()),
            ("MKL_NUM_THREADS", "1".into()),
            ("MALLOC_ARENA_MAX", "2".into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
            ("PYDEVD_DISABLE_FILE_VALIDATION", "1".into()),
        ];
        let from_env = self.env.kernel_vars(Path::new(ENV_IN_SANDBOX));
        fixed
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(from_env.into_iter().map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned())))
            .collect()
    }

    /// The mounts every kernel sandbox has: the base interpreter at its own path, the venv at [`ENV_IN_SANDBOX`].
    fn base(&self, name: &str, root_dir: &Path) -> sandbox::PolicyBuilder {
        Policy::builder(name)
            .root_dir(root_dir)
            .ro_bind(&self.env.base_prefix, &self.env.base_prefix)
            .ro_bind(&self.env.root, ENV_IN_SANDBOX)
            .cgroup_parent(&self.cgroup_parent)
            .cwd("/sandbox")
    }

    /// The policy of kernel sandbox `name` in slot `slot`, running from `session_dir`.
    pub(super) fn session(&self, name: &str, slot: usize, session_dir: &SessionDir) -> Result<Policy, LaunchError> {
        let uid = self.uid(slot);
        let builder = self
            .base(name, &session_dir.root())
            .identity(uid, uid)
            .rw_bind(session_dir.run(), RUN_IN_SANDBOX)
            .address_space_limit(self.address_space)
            .open_files_limit(self.open_files)
            .tmpfs(self.tmpfs)
            .memory_limit(self.memory_bytes)
            .pids_limit(self.pids_max)
            .cpu_millicores(self.cpu_millicores)
            .argv(self.kernel_argv());
        let builder = IPYTHON_PROFILE_DIRS
            .iter()
            .fold(builder, |builder, (dir, mode)| builder.owned_dir(format!("{IPYTHON_DIR}{dir}"), *mode));
        self.kernel_vars()
            .into_iter()
            .fold(builder, |builder, (key, value)| builder.env(key, value))
            .build()
            .map_err(|err| LaunchError::Sandbox(sandbox::Error::from(err)))
    }

    /// The zygote's own root: a kernel sandbox's mounts (only the mounts are used), on `root_dir`.
    pub(super) fn zygote_root(&self, root_dir: &Path) -> Result<Policy, LaunchError> {
        self.base("zygote", root_dir)
            .identity(65_534, 65_534)
            .argv([self.python().to_string_lossy().into_owned()])
            .build()
            .map_err(|err| LaunchError::Sandbox(sandbox::Error::from(err)))
    }
}

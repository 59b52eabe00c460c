//! The one `Config` of the service and its loader: defaults, then a TOML file, then `CODE_INTERPRETER_*`, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Every setting of the service. Each is a flag, an env var `CODE_INTERPRETER_<NAME>` and a key in the TOML file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// If set, `GET /metrics` is served on this address of its own without a token, and not on `listen`;
    /// otherwise it is served on `listen` and needs the token.
    pub metrics_listen: Option<SocketAddr>,
    /// Token file, session directories and (unless `kernel_env` is set) the kernel environment live here.
    pub data_dir: PathBuf,
    /// The Python virtualenv the kernels run from; created on first start. Default: `<data_dir>/kernel-env`.
    pub kernel_env: Option<PathBuf>,
    /// The interpreter the kernel environment is created from; `None`: the newest supported CPython found
    /// (`kernel_env::installed_pythons`).
    pub python: Option<PathBuf>,
    /// Warm sandboxes kept ready for new users.
    pub warm_sandboxes: usize,
    /// Most sandboxes alive at once (warm, bound to a user, or starting); beyond it `/execute` answers 503.
    pub max_sandboxes: usize,
    /// Seconds an execution may run before the kernel is interrupted (its state is kept).
    pub execution_timeout_secs: f64,
    /// Seconds an interrupted execution gets to stop before its kernel is replaced (state lost).
    pub interrupt_grace_secs: f64,
    /// Seconds a session may stay idle before it is recycled.
    pub idle_timeout_secs: u64,
    /// Seconds between two checks for idle sessions.
    pub reap_interval_secs: u64,
    /// Seconds a new kernel may take to become ready before its start counts as failed.
    pub kernel_start_timeout_secs: f64,
    /// Memory per sandbox in MiB (cgroup hard limit; the kernel is killed beyond it).
    pub memory_limit_mib: u64,
    /// Most processes and threads per sandbox.
    pub pids_limit: u64,
    /// CPU per sandbox, in cores (a CFS quota).
    pub cpu_limit_cores: f64,
    /// Size of the sandbox's writable `/tmp` in MiB.
    pub tmp_size_mib: u64,
    /// Size of the sandbox's writable home and working directory `/sandbox` in MiB.
    pub sandbox_size_mib: u64,
    /// Most open files per sandbox process.
    pub open_files_limit: u64,
    /// Most bytes of output kept per execution, in KiB; beyond it the answer is cut and flagged.
    pub output_limit_kib: u64,
    /// Largest code accepted per request, in KiB; beyond it `/execute` answers 413.
    pub code_limit_kib: u64,
    /// Largest file accepted per upload to `/files`, in MiB; beyond it the upload answers 413.
    pub file_limit_mib: u64,
    /// First uid of the range given to sandboxes (one uid per sandbox slot).
    pub uid_base: u32,
    /// How kernels are started: forked from the pre-loaded zygote (fast, shared memory) or exec'd fresh.
    pub launcher: LauncherKind,
}

/// How kernels are started; both put each kernel in the same sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// Fork each kernel from one interpreter that has imported ipykernel, numpy, pandas and matplotlib; falls
    /// back to `exec` (with a warning) where the zygote cannot run, e.g. a Python without a shared libpython.
    Zygote,
    /// Start each kernel as a fresh `python -m code_interpreter_kernel`.
    Exec,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3874)),
            metrics_listen: None,
            data_dir: default_data_dir(),
            kernel_env: None,
            python: None,
            warm_sandboxes: 5,
            max_sandboxes: 30,
            execution_timeout_secs: 10.0,
            interrupt_grace_secs: 2.0,
            idle_timeout_secs: 3600,
            reap_interval_secs: 300,
            kernel_start_timeout_secs: 60.0,
            memory_limit_mib: 1024,
            pids_limit: 512,
            cpu_limit_cores: 1.0,
            tmp_size_mib: 256,
            sandbox_size_mib: 512,
            open_files_limit: 1024,
            output_limit_kib: 5 * 1024,
            code_limit_kib: 1024,
            file_limit_mib: 100,
            uid_base: 200_000,
            launcher: LauncherKind::Zygote,
        }
    }
}

/// `$XDG_DATA_HOME/code-interpreter`, else `$HOME/.local/share/code-interpreter`, else `./data`.
pub fn default_data_dir() -> PathBuf {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("code-interpreter");
    }
    match non_empty("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/code-interpreter"),
        None => PathBuf::from("data"),
    }
}

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be merged into a `Config` (unknown key, wrong type, unreadable file).
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// The key, as in the TOML file.
        key: &'static str,
        /// What is wrong with its value.
        problem: &'static str,
    },
}

impl Config {
    /// Merges the layers, lowest first: defaults, the TOML file, `CODE_INTERPRETER_*` env vars, then flags.
    pub fn load(file: Option<&Path>, flags: &Settings) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Load(Box::new(figment::Error::from(format!(
                    "config file {} does not exist",
                    file.display()
                )))));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("CODE_INTERPRETER_"))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem| Err(ConfigError::Invalid { key, problem });
        if self.max_sandboxes == 0 {
            return invalid("max_sandboxes", "must be at least 1");
        }
        if self.warm_sandboxes > self.max_sandboxes {
            return invalid("warm_sandboxes", "must not exceed max_sandboxes");
        }
        for (key, secs) in [
            ("execution_timeout_secs", self.execution_timeout_secs),
            ("interrupt_grace_secs", self.interrupt_grace_secs),
            ("kernel_start_timeout_secs", self.kernel_start_timeout_secs),
            ("cpu_limit_cores", self.cpu_limit_cores),
        ] {
            if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
                return invalid(key, "must be a positive number");
            }
        }
        if self.reap_interval_secs == 0 || self.idle_timeout_secs == 0 {
            return invalid("idle_timeout_secs", "and reap_interval_secs must be at least 1");
        }
        if self.memory_limit_mib < 64 {
            return invalid("memory_limit_mib", "must be at least 64");
        }
        if self.open_files_limit < 64 {
            return invalid("open_files_limit", "must be at least 64");
        }
        if self.output_limit_kib == 0 || self.code_limit_kib == 0 {
            return invalid("output_limit_kib", "and code_limit_kib must be at least 1");
        }
        if self.code_limit_kib > 64 * 1024 {
            return invalid("code_limit_kib", "must be at most 65536 (64 MiB)");
        }
        if self.metrics_listen.is_some_and(|metrics| metrics == self.listen && metrics.port() != 0) {
            return invalid("metrics_listen", "must differ from listen");
        }
        if self.file_limit_mib == 0 {
            return invalid("file_limit_mib", "must be at least 1");
        }
        if self.pids_limit < 16 {
            return invalid("pids_limit", "must be at least 16");
        }
        if self.uid_base < 1000 || self.uid_base.checked_add(self.max_sandboxes as u32).is_none() {
            return invalid("uid_base", "must be at least 1000 and leave room for max_sandboxes uids");
        }
        Ok(())
    }

    /// The kernel environment's directory.
    pub fn kernel_env_dir(&self) -> PathBuf {
        self.kernel_env.clone().unwrap_or_else(|| self.data_dir.join("kernel-env"))
    }

    /// The execution timeout.
    pub fn execution_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.execution_timeout_secs)
    }
}

/// Command line of `code-interpreter`.
#[derive(Debug, Parser)]
#[command(name = "code-interpreter", version, about = "Stateful, sandboxed Python sessions over HTTP")]
pub struct Cli {
    /// TOML file with settings (keys as the flags, with underscores).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Settings; each also read from `CODE_INTERPRETER_<NAME>` (e.g. CODE_INTERPRETER_MAX_SANDBOXES).
    #[command(flatten)]
    pub settings: Settings,
    /// Stop (as on SIGTERM) when standard input reaches end of file: for supervisors and tests that hold a pipe.
    #[arg(long, global = true)]
    pub stop_on_stdin_eof: bool,
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `code-interpreter` does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the token the server uses (from AUTH_TOKEN or the data directory).
    Token,
    /// Create the Python kernel environment if it is missing, then exit.
    Setup,
}

/// The flags: each overrides the file and the environment when given.
#[derive(Debug, Default, Args, Serialize)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:3874]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Serve /metrics on this address without a token (and not on --listen) [default: on --listen, with the token]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Data directory [default: $XDG_DATA_HOME/code-interpreter or ~/.local/share/code-interpreter]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Kernel virtualenv [default: <data-dir>/kernel-env]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_env: Option<PathBuf>,
    /// Python used to create the kernel environment [default: the newest CPython 3.11 to 3.13 found: python3.X or
    /// python3 on PATH, or in pyenv's versions]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
    /// Warm sandboxes kept ready [default: 5]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_sandboxes: Option<usize>,
    /// Most sandboxes at once [default: 30]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sandboxes: Option<usize>,
    /// Execution timeout in seconds [default: 10]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_timeout_secs: Option<f64>,
    /// Seconds an interrupted execution gets before its kernel is replaced [default: 2]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupt_grace_secs: Option<f64>,
    /// Idle seconds before a session is recycled [default: 3600]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds between idle checks [default: 300]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reap_interval_secs: Option<u64>,
    /// Seconds a kernel may take to start [default: 60]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_start_timeout_secs: Option<f64>,
    /// Memory per sandbox in MiB [default: 1024]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// Processes and threads per sandbox [default: 512]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
    /// CPU cores per sandbox [default: 1]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_limit_cores: Option<f64>,
    /// Size of /tmp in MiB [default: 256]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmp_size_mib: Option<u64>,
    /// Size of /sandbox in MiB [default: 512]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_size_mib: Option<u64>,
    /// Open files per sandbox process [default: 1024]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_files_limit: Option<u64>,
    /// Output kept per execution in KiB [default: 5120]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_limit_kib: Option<u64>,
    /// Largest code per request in KiB [default: 1024]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_limit_kib: Option<u64>,
    /// Largest upload to /files in MiB [default: 100]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_limit_mib: Option<u64>,
    /// First uid given to sandboxes [default: 200000]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_base: Option<u32>,
    /// How kernels are started [default: zygote]
    #[arg(long, global = true, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launcher: Option<LauncherKind>,
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's `Jail` closures return its large error type
mod tests {
    use super::*;
    use figment::Jail;

    /// Layers apply lowest first: defaults < file < env < flags.
    #[test]
    fn layers_override_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "max_sandboxes = 7\nwarm_sandboxes = 2\nexecution_timeout_secs = 3.5")?;
            jail.set_env("CODE_INTERPRETER_WARM_SANDBOXES", "3");
            let flags = Settings { execution_timeout_secs: Some(1.5), ..Settings::default() };
            let config = Config::load(Some(Path::new("c.toml")), &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.max_sandboxes, 7);
            assert_eq!(config.warm_sandboxes, 3);
            assert_eq!(config.execution_timeout_secs, 1.5);
            assert_eq!(config.memory_limit_mib, 1024);
            Ok(())
        });
    }

    /// Unknown keys and out-of-range values are refused with the key's name.
    #[test]
    fn bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "max_sandbox = 7")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Settings::default()).unwrap_err();
            assert!(err.to_string().contains("max_sandbox"), "{err}");
            jail.create_file("zero.toml", "max_sandboxes = 0")?;
            let err = Config::load(Some(Path::new("zero.toml")), &Settings::default()).unwrap_err();
            assert!(err.to_string().contains("max_sandboxes"), "{err}");
            let err = Config::load(Some(Path::new("missing.toml")), &Settings::default()).unwrap_err();
            assert!(err.to_string().contains("missing.toml"), "{err}");
            Ok(())
        });
    }

    /// `metrics_listen` is off by default, comes from the file or the environment, and must differ from `listen`.
    #[test]
    fn metrics_listen_is_optional_and_distinct() {
        Jail::expect_with(|jail| {
            assert_eq!(Config::default().metrics_listen, None);
            jail.set_env("CODE_INTERPRETER_METRICS_LISTEN", "127.0.0.1:9464");
            let config = Config::load(None, &Settings::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.metrics_listen, Some(SocketAddr::from(([127, 0, 0, 1], 9464))));
            jail.create_file("same.toml", "listen = \"127.0.0.1:9464\"")?;
            let err = Config::load(Some(Path::new("same.toml")), &Settings::default()).unwrap_err();
            assert!(err.to_string().contains("metrics_listen"), "{err}");
            Ok(())
        });
    }

    /// The defaults are the original service's.
    #[test]
    fn defaults_match_the_original() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:3874");
        assert_eq!((config.warm_sandboxes, config.max_sandboxes), (5, 30));
        assert_eq!(config.execution_timeout_secs, 10.0);
        assert_eq!((config.idle_timeout_secs, config.reap_interval_secs), (3600, 300));
        assert_eq!(config.memory_limit_mib, 1024);
    }
}

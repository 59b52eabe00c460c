//! The Python kernel environment: one virtualenv with ipykernel and the scientific stack, created once, reused.
//!
//! Layout of a finished environment at `root` (e.g. `~/.local/share/code-interpreter/kernel-env`):
//! - `bin/python`: the venv's interpreter (a symlink into `base_prefix`, which the sandbox must bind-mount
//!   read-only at the same path). Start kernels with `<venv>/bin/python -m code_interpreter_kernel -f <conn>`;
//!   console scripts in `bin/` are rewritten to find `python` next to themselves, so they work at any mount point.
//! - `lib/python3.X/site-packages/code_interpreter_kernel.py`: the kernel (ipykernel's, leaner; see the module).
//! - `share/code-interpreter/matplotlibrc`: CJK default font, inline backend (`MATPLOTLIBRC` points at it).
//! - `share/code-interpreter/mpl-cache/fontlist-*.json`: matplotlib's font list, prebuilt and relocatable; copy it
//!   into a kernel's fresh `MPLCONFIGDIR` to skip the ~0.15 s font scan on its first `import matplotlib`.
//! - `kernel-env.json`: metadata and the hash of the embedded inputs, written last ([`existing`] reads it).
//!
//! The environment is built in `<root>.partial` and renamed into place, under an exclusive lock on `<root>.lock`.

mod command;
mod install;
mod lock;
mod marker;
mod probe;
mod pythons;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use install::build;
use lock::lock_exclusive;
use marker::{inputs_hash, EnvMeta};
pub use pythons::{installed_pythons, NEWEST_TESTED};

/// Exact package pins, transitive dependencies included.
const REQUIREMENTS: &str = include_str!("../../../../python/requirements.txt");
/// matplotlib settings applied in every kernel.
const MATPLOTLIBRC: &str = include_str!("../../../../python/matplotlibrc");
/// Post-install step run with the venv's python: kernel module, CJK font, font cache, relocatable scripts, smoke
/// test.
const SETUP_SCRIPT: &str = include_str!("../../../../python/setup_env.py");
/// The module every kernel is started as (`<venv>/bin/python -m KERNEL_MODULE`), installed by the setup script.
pub const KERNEL_MODULE: &str = "code_interpreter_kernel";
/// Its source.
const KERNEL_MODULE_SOURCE: &str = include_str!("../../../../python/code_interpreter_kernel.py");
/// Every embedded file, as written into `SHARE_DIR` (and hashed into the marker: a change to any means a rebuild).
const EMBEDDED: [(&str, &str); 4] = [
    ("requirements.txt", REQUIREMENTS),
    ("matplotlibrc", MATPLOTLIBRC),
    ("setup_env.py", SETUP_SCRIPT),
    ("code_interpreter_kernel.py", KERNEL_MODULE_SOURCE),
];
/// The pinned wheels (numpy 2.4, pandas 3, scipy 1.17) need this Python or newer.
const MIN_PYTHON: (u32, u32) = (3, 11);
/// Metadata file inside the environment, written last.
const META_FILE: &str = "kernel-env.json";
/// Where the embedded files go inside the environment.
const SHARE_DIR: &str = "share/code-interpreter";

/// The default location: `$XDG_DATA_HOME/code-interpreter/kernel-env`, else
/// `$HOME/.local/share/code-interpreter/kernel-env`; `None` when neither variable is usable.
pub fn default_root() -> Option<PathBuf> {
    let absolute_var = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = absolute_var("XDG_DATA_HOME").or_else(|| absolute_var("HOME").map(|home| home.join(".local/share")))?;
    Some(base.join("code-interpreter").join("kernel-env"))
}

/// A complete kernel environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEnv {
    /// The virtualenv's directory.
    pub root: PathBuf,
    /// `root/bin/python`, the interpreter to start kernels with.
    pub python: PathBuf,
    /// `sys.base_prefix` of the interpreter the venv was made from: `bin/python` links into it, so the sandbox
    /// must bind-mount it read-only at the same path.
    pub base_prefix: PathBuf,
    /// The matplotlibrc every kernel uses (inside `root`; set `MATPLOTLIBRC` to it, as seen from the kernel).
    pub matplotlibrc: PathBuf,
    /// Directory with matplotlib's prebuilt font list (`fontlist-*.json`, relocatable): copying its files into a
    /// kernel's empty `MPLCONFIGDIR` before start saves the font scan on the first `import matplotlib`.
    pub font_cache_dir: PathBuf,
    /// Version of the base interpreter, e.g. `3.11.7`.
    pub python_version: String,
}

impl KernelEnv {
    /// `path` (inside [`KernelEnv::root`]) as seen when the venv is mounted at `mount`, e.g.
    /// `env.path_at(&env.matplotlibrc, Path::new("/opt/kernel-env"))`. Paths outside `root` are returned as-is.
    pub fn path_at(&self, path: &Path, mount: &Path) -> PathBuf {
        match path.strip_prefix(&self.root) {
            Ok(rel) => mount.join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Environment variables a kernel process needs from this environment when the venv is mounted at `mount`
    /// (the sandbox adds its own: `HOME`, `TMPDIR`, `MPLCONFIGDIR`, ...).
    pub fn kernel_vars(&self, mount: &Path) -> Vec<(&'static str, PathBuf)> {
        vec![("MATPLOTLIBRC", self.path_at(&self.matplotlibrc, mount))]
    }
}

/// Why the kernel environment could not be created. Every message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The interpreter could not be found.
    #[error(
        "{} not found: install Python {}.{}+ (e.g. apt-get install python3 python3-venv) or pass --python PATH",
        python.display(), MIN_PYTHON.0, MIN_PYTHON.1
    )]
    PythonMissing {
        /// The interpreter asked for.
        python: PathBuf,
    },
    /// The interpreter ran but did not answer like a Python 3.
    #[error(
        "{} does not work as a Python interpreter ({detail}): pass a working Python {}.{}+ with --python PATH",
        python.display(), MIN_PYTHON.0, MIN_PYTHON.1
    )]
    PythonBroken {
        /// The interpreter asked for.
        python: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The interpreter is older than the pinned packages need.
    #[error(
        "{} is Python {version}, but the kernel packages need Python {}.{} or newer: install one and pass it with --python PATH",
        python.display(), MIN_PYTHON.0, MIN_PYTHON.1
    )]
    PythonTooOld {
        /// The interpreter asked for.
        python: PathBuf,
        /// Its version.
        version: String,
    },
    /// `venv` or `ensurepip` cannot be used with this interpreter.
    #[error(
        "the {module} module is missing or disabled in {}: install it (Debian/Ubuntu: apt-get install python3-venv, \
         or python3.X-venv for your version) or pass another Python with --python PATH",
        python.display()
    )]
    VenvUnavailable {
        /// The interpreter asked for.
        python: PathBuf,
        /// `venv` or `ensurepip`.
        module: &'static str,
    },
    /// `python -m venv` failed.
    #[error(
        "creating the virtualenv {} failed ({status}):\n{output}\ncheck free space and permissions there \
         (Debian/Ubuntu: apt-get install python3-venv), or pass another Python with --python PATH",
        path.display()
    )]
    VenvFailed {
        /// The directory being created.
        path: PathBuf,
        /// How `python -m venv` ended.
        status: ExitStatus,
        /// The end of its output.
        output: String,
    },
    /// `pip install` failed.
    #[error(
        "installing the kernel packages with pip failed ({status}); its last lines:\n{tail}\ncheck that PyPI (or the \
         index set in your pip config / PIP_INDEX_URL) is reachable and that wheels exist for this Python and \
         platform, then start again: the install is retried from scratch"
    )]
    PipFailed {
        /// How pip ended.
        status: ExitStatus,
        /// The end of pip's output.
        tail: String,
    },
    /// The post-install setup (font, matplotlib check, smoke imports) failed.
    #[error(
        "finishing the kernel environment failed ({status}):\n{output}\nthis is a bug or a broken package set; \
         report it with this output (start again to retry from scratch)"
    )]
    SetupFailed {
        /// How the setup script ended.
        status: ExitStatus,
        /// The end of its output.
        output: String,
    },
    /// A file operation failed.
    #[error(
        "{}: {source}: check permissions and free space there, or choose another location for the kernel \
         environment",
        path.display()
    )]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Shorthand for `map_err` into [`EnvError::Io`].
fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EnvError + '_ {
    move |source| EnvError::Io { path: path.to_path_buf(), source }
}

/// A sync check without creating anything: `Some(env)` if `root` holds a complete environment for the current
/// requirements (marker present with the current hash, interpreter and base prefix still there).
pub fn existing(root: &Path) -> Option<KernelEnv> {
    let meta: EnvMeta = serde_json::from_slice(&std::fs::read(root.join(META_FILE)).ok()?).ok()?;
    if meta.inputs_sha256 != inputs_hash() {
        return None;
    }
    let python = root.join("bin").join("python");
    // `is_file` follows the symlink into base_prefix: a removed base interpreter means a broken venv.
    if !python.is_file() || !meta.base_prefix.is_dir() {
        return None;
    }
    let share = root.join(SHARE_DIR);
    Some(KernelEnv {
        root: root.to_path_buf(),
        python,
        base_prefix: meta.base_prefix,
        matplotlibrc: share.join("matplotlibrc"),
        font_cache_dir: share.join("mpl-cache"),
        python_version: meta.python_version,
    })
}

/// Returns the environment at `root`, creating it first if it is missing or was made from another requirements
/// file (hash stored in a marker written last, so a half-finished install is redone). Serialised by an exclusive
/// file lock next to `root` so concurrent callers (e.g. parallel test processes) don't race: the second waits and
/// then reuses. Progress: step lines like "[1/4] creating virtualenv at ..." then pip's own output streamed to the
/// terminal (stderr), then "kernel environment ready in 63 s".
///
/// `python` is the interpreter to build from (`python3` looks it up on `PATH`); `None` picks the newest CPython
/// found that can ([`installed_pythons`]). An existing environment is reused whichever interpreter it was built
/// from, as long as that interpreter is still installed.
pub async fn ensure(root: &Path, python: Option<&Path>) -> Result<KernelEnv, EnvError> {
    let root = std::path::absolute(root).map_err(io_err(root))?;
    if let Some(env) = existing(&root) {
        return Ok(env);
    }
    if let Some(parent) = root.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_err(parent))?;
    }
    let _lock = lock_exclusive(sibling(&root, "lock")).await?;
    // Whoever held the lock before us may have just built it.
    if let Some(env) = existing(&root) {
        return Ok(env);
    }
    match python {
        Some(python) => build(&root, python).await,
        None => {
            let python = pythons::default_python().await;
            eprintln!(
                "no --python given: {} is the newest CPython {}.{} to {}.{} here that can make it",
                python.display(),
                MIN_PYTHON.0,
                MIN_PYTHON.1,
                NEWEST_TESTED.0,
                NEWEST_TESTED.1
            );
            build(&root, &python).await
        }
    }
}

/// `<root>.<suffix>` next to `root`.
fn sibling(root: &Path, suffix: &str) -> PathBuf {
    let mut name = root.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    root.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::marker::{inputs_hash, write_meta, EnvMeta};
    use super::*;

    /// A directory that looks like a finished environment to [`existing`], with `meta` as its marker.
    fn fake_env(dir: &Path, meta: &EnvMeta) -> PathBuf {
        let root = dir.join("kernel-env");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/python"), "").unwrap();
        write_meta(&root, meta).unwrap();
        root
    }

    fn meta_for(base_prefix: &Path) -> EnvMeta {
        EnvMeta {
            inputs_sha256: inputs_hash(),
            base_prefix: base_prefix.to_path_buf(),
            python_version: "3.11.7".into(),
            base_executable: base_prefix.join("bin/python3"),
            created_unix: 1,
            build_seconds: 2.0,
        }
    }

    #[test]
    fn existing_accepts_only_a_complete_env_with_the_current_hash() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let root = fake_env(dir.path(), &meta_for(&base));

        let env = existing(&root).expect("complete env is found");
        assert_eq!(env.root, root);
        assert_eq!(env.python, root.join("bin/python"));
        assert_eq!(env.base_prefix, base);
        assert_eq!(env.python_version, "3.11.7");
        assert_eq!(env.matplotlibrc, root.join("share/code-interpreter/matplotlibrc"));
        assert_eq!(
            env.kernel_vars(Path::new("/opt/kernel-env")),
            vec![("MATPLOTLIBRC", PathBuf::from("/opt/kernel-env/share/code-interpreter/matplotlibrc"))]
        );

        // Made from other requirements: rebuilt.
        let mut other = meta_for(&base);
        other.inputs_sha256 = "0".repeat(64);
        write_meta(&root, &other).unwrap();
        assert!(existing(&root).is_none());

        // Marker missing (a half-finished install) or unreadable.
        std::fs::remove_file(root.join(META_FILE)).unwrap();
        assert!(existing(&root).is_none());
        std::fs::write(root.join(META_FILE), "{not json").unwrap();
        assert!(existing(&root).is_none());

        // Base interpreter gone, or the venv's python gone.
        write_meta(&root, &meta_for(&dir.path().join("gone"))).unwrap();
        assert!(existing(&root).is_none());
        write_meta(&root, &meta_for(&base)).unwrap();
        assert!(existing(&root).is_some());
        std::fs::remove_file(root.join("bin/python")).unwrap();
        assert!(existing(&root).is_none());
        assert!(existing(&dir.path().join("nothing-here")).is_none());
    }

    #[test]
    fn sibling_paths_and_default_root() {
        let root = Path::new("/data/code-interpreter/kernel-env");
        assert_eq!(sibling(root, "partial"), Path::new("/data/code-interpreter/kernel-env.partial"));
        assert_eq!(sibling(root, "lock"), Path::new("/data/code-interpreter/kernel-env.lock"));
        if let Some(r) = default_root() {
            assert!(r.is_absolute());
            assert!(r.ends_with("code-interpreter/kernel-env"));
        }
    }

    #[tokio::test]
    async fn ensure_reuses_a_complete_env_without_running_python() {
        let dir = tempfile::tempdir().unwrap();
        let root = fake_env(dir.path(), &meta_for(dir.path()));
        let env = ensure(&root, Some(Path::new("/nonexistent/python3"))).await.unwrap();
        assert_eq!(env.root, root);
    }

    #[tokio::test]
    async fn ensure_reports_a_missing_python_helpfully() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("env");
        let python = dir.path().join("no-such-python3");
        let err = ensure(&root, Some(&python)).await.unwrap_err();
        assert!(matches!(&err, EnvError::PythonMissing { python: p } if *p == python), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("no-such-python3 not found"), "{msg}");
        assert!(msg.contains("--python PATH"), "{msg}");
        assert!(!root.exists(), "nothing is left behind");
        assert!(!sibling(&root, "partial").exists());
    }

    #[tokio::test]
    async fn ensure_reports_a_program_that_is_not_python() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("python3");
        std::fs::write(&fake, "#!/bin/sh\necho 'I am not python' >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let err = ensure(&dir.path().join("env"), Some(&fake)).await.unwrap_err();
        assert!(matches!(err, EnvError::PythonBroken { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("I am not python"), "{msg}");
        assert!(msg.contains("--python PATH"), "{msg}");
    }
}

//! Building the environment: a venv in `<root>.partial`, pip, the setup script, the marker, the swap into place.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::path::Path;
use std::process::Stdio;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::command::{quiet_command, spawn_err, tail_of_output, TAIL_LINES};
use super::marker::{inputs_hash, write_meta, EnvMeta};
use super::probe::probe_python;
use super::{existing, io_err, sibling, EnvError, KernelEnv, EMBEDDED, META_FILE, REQUIREMENTS, SHARE_DIR};

/// Removes `path` (file or directory tree) if it exists.
async fn remove_any(path: &Path) -> Result<(), EnvError> {
    match tokio::fs::symlink_metadata(path).await {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(path).await.map_err(io_err(path)),
        Ok(_) => tokio::fs::remove_file(path).await.map_err(io_err(path)),
    }
}

/// Builds the environment in `<root>.partial` and renames it to `root`. The caller holds the lock.
pub(super) async fn build(root: &Path, python: &Path) -> Result<KernelEnv, EnvError> {
    let started = Instant::now();
    let partial = sibling(root, "partial");
    eprintln!(
        "creating the Python kernel environment at {} (one time: ~700 MB, a few minutes, needs PyPI)",
        root.display()
    );

    eprintln!("[1/4] checking {}", python.display());
    let probe = probe_python(python).await?;
    eprintln!("      Python {} at {}", probe.version_string(), probe.base_prefix.display());

    eprintln!("[2/4] creating virtualenv at {}", partial.display());
    remove_any(&partial).await?; // left over from an interrupted build
    let out = quiet_command(python)
        .arg("-m")
        .arg("venv")
        .arg("--prompt")
        .arg(root.file_name().unwrap_or(root.as_os_str()))
        .arg(&partial)
        .output()
        .await
        .map_err(|e| spawn_err(python, e))?;
    if !out.status.success() {
        return Err(EnvError::VenvFailed { path: partial, status: out.status, output: tail_of_output(&out) });
    }
    let share = partial.join(SHARE_DIR);
    tokio::fs::create_dir_all(&share).await.map_err(io_err(&share))?;
    for (name, text) in EMBEDDED {
        let path = share.join(name);
        tokio::fs::write(&path, text).await.map_err(io_err(&path))?;
    }
    let venv_python = partial.join("bin").join("python");

    let count = REQUIREMENTS.lines().filter(|l| l.contains("==")).count();
    eprintln!("[3/4] installing {count} packages with pip (wheels only)");
    let pip_started = Instant::now();
    pip_install(&venv_python, &share.join("requirements.txt")).await?;
    eprintln!("      installed in {} s", pip_started.elapsed().as_secs());

    eprintln!("[4/4] setting up matplotlib (CJK font, font cache) and checking imports");
    let out = quiet_command(&venv_python)
        .arg(share.join("setup_env.py"))
        .arg(root)
        .output()
        .await
        .map_err(|e| spawn_err(&venv_python, e))?;
    if !out.status.success() {
        return Err(EnvError::SetupFailed { status: out.status, output: tail_of_output(&out) });
    }
    eprintln!("      {}", String::from_utf8_lossy(&out.stdout).trim());

    // The marker goes in last: without it (or with another hash) the directory is never used.
    let meta = EnvMeta {
        inputs_sha256: inputs_hash(),
        base_prefix: probe.base_prefix.clone(),
        python_version: probe.version_string(),
        base_executable: probe.executable.clone(),
        created_unix: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    write_meta(&partial, &meta)?;

    // Swap into place: an old environment (other requirements) is moved aside first, then deleted.
    let old = sibling(root, "old");
    remove_any(&old).await?;
    if tokio::fs::symlink_metadata(root).await.is_ok() {
        tokio::fs::rename(root, &old).await.map_err(io_err(root))?;
    }
    tokio::fs::rename(&partial, root).await.map_err(io_err(root))?;
    remove_any(&old).await?;

    eprintln!("kernel environment ready in {} s", started.elapsed().as_secs());
    existing(root).ok_or_else(|| EnvError::Io {
        path: root.join(META_FILE),
        source: std::io::Error::other("the environment just built does not check out as complete"),
    })
}

/// `pip install -r requirements`, its output streamed to stderr as it comes and its tail kept for the error.
async fn pip_install(venv_python: &Path, requirements: &Path) -> Result<(), EnvError> {
    let mut child = quiet_command(venv_python)
        .args(["-m", "pip", "install"])
        .args(["--disable-pip-version-check", "--no-input"])
        .args(["--only-binary=:all:", "--progress-bar=off"])
        .arg("-r")
        .arg(requirements)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_err(venv_python, e))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    fn forward(stream: impl AsyncRead + Unpin + Send + 'static, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    forward(child.stdout.take().expect("piped"), tx.clone());
    forward(child.stderr.take().expect("piped"), tx);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    while let Some(line) = rx.recv().await {
        eprintln!("      {line}");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().await.map_err(io_err(venv_python))?;
    if status.success() {
        Ok(())
    } else {
        Err(EnvError::PipFailed { status, tail: Vec::from(tail).join("\n") })
    }
}

//! Checking the base interpreter before anything is created: version, base prefix, `venv` and `ensurepip`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::command::{quiet_command, spawn_err, tail_of_output};
use super::{EnvError, MIN_PYTHON};

/// What the base interpreter says about itself.
#[derive(Debug, Deserialize)]
pub(super) struct Probe {
    version: (u32, u32, u32),
    pub(super) base_prefix: PathBuf,
    pub(super) executable: PathBuf,
    venv: bool,
    ensurepip: bool,
}

impl Probe {
    pub(super) fn version_string(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }
}

/// Asks the interpreter for its version and base prefix, and whether it can make a venv with pip.
const PROBE_SCRIPT: &str = r#"
import json, sys
def usable(name, check):
    try:
        return bool(check(__import__(name)))
    except Exception:
        return False
print(json.dumps({
    "version": list(sys.version_info[:3]),
    "base_prefix": sys.base_prefix,
    "executable": getattr(sys, "_base_executable", sys.executable),
    "venv": usable("venv", lambda m: m.EnvBuilder),
    # Debian ships ensurepip without its wheels unless python3-venv is installed: ask for the bundled version.
    "ensurepip": usable("ensurepip", lambda m: m.version()),
}))
"#;

/// Runs the probe and checks the answer.
pub(super) async fn probe_python(python: &Path) -> Result<Probe, EnvError> {
    let broken = |detail: String| EnvError::PythonBroken { python: python.to_path_buf(), detail };
    let run = quiet_command(python).arg("-c").arg(PROBE_SCRIPT).output();
    let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Err(_) => return Err(broken("no answer within 60 s".into())),
        Ok(r) => r.map_err(|e| spawn_err(python, e))?,
    };
    if !out.status.success() {
        return Err(broken(format!("{}: {}", out.status, tail_of_output(&out))));
    }
    let probe: Probe = serde_json::from_slice(&out.stdout)
        .map_err(|e| broken(format!("unexpected answer ({e}): {}", String::from_utf8_lossy(&out.stdout).trim())))?;
    let (major, minor, _) = probe.version;
    if (major, minor) < MIN_PYTHON {
        return Err(EnvError::PythonTooOld { python: python.to_path_buf(), version: probe.version_string() });
    }
    for (ok, module) in [(probe.venv, "venv"), (probe.ensurepip, "ensurepip")] {
        if !ok {
            return Err(EnvError::VenvUnavailable { python: python.to_path_buf(), module });
        }
    }
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_accepts_the_python_on_path() {
        // The machine's python3 (CI has one): version, base prefix, venv and ensurepip, without creating anything.
        match probe_python(Path::new("python3")).await {
            Ok(p) => {
                assert!(p.version >= (3, 11, 0));
                assert!(p.base_prefix.is_dir());
                assert!(p.venv && p.ensurepip);
            }
            Err(e @ EnvError::PythonMissing { .. }) => eprintln!("skipped: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
}

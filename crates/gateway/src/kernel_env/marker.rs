//! The marker `kernel-env.json`: the environment's metadata and the hash of the embedded inputs it was built from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{io_err, EnvError, EMBEDDED, META_FILE};

/// Bump when the build steps change in a way the embedded files above do not show.
const LAYOUT_VERSION: u32 = 2;

/// Contents of `kernel-env.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct EnvMeta {
    /// [`inputs_hash`] of the binary that built the environment.
    pub(super) inputs_sha256: String,
    /// `sys.base_prefix` of the interpreter the venv was made from.
    pub(super) base_prefix: PathBuf,
    /// Its version, e.g. `3.11.7`.
    pub(super) python_version: String,
    /// The real executable the venv was made from.
    pub(super) base_executable: PathBuf,
    /// When it was finished (seconds since the epoch).
    pub(super) created_unix: u64,
    /// How long building it took.
    pub(super) build_seconds: f64,
}

/// SHA-256 over everything embedded that shapes the environment: a change to any of it means a rebuild.
pub(super) fn inputs_hash() -> String {
    let mut h = Sha256::new();
    h.update(format!("layout {LAYOUT_VERSION}\n"));
    for (name, text) in EMBEDDED {
        h.update(format!("{name} {}\n", text.len()));
        h.update(text);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
}

/// Writes `kernel-env.json` into `dir` (via a temporary file and a rename).
pub(super) fn write_meta(dir: &Path, meta: &EnvMeta) -> Result<(), EnvError> {
    let path = dir.join(META_FILE);
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(meta).expect("metadata serialises");
    std::fs::write(&tmp, json).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::super::{MATPLOTLIBRC, REQUIREMENTS};
    use super::*;

    #[test]
    fn hash_covers_every_embedded_input() {
        let h = inputs_hash();
        assert_eq!(h.len(), 64);
        assert_eq!(h, inputs_hash(), "stable");
        assert!(REQUIREMENTS.contains("ipykernel==7."));
        assert!(REQUIREMENTS.contains("noto-cjk-sans-otc==0.0.1"));
        assert!(MATPLOTLIBRC.contains("module://matplotlib_inline.backend_inline"));
        // Every requirement line is an exact pin.
        for line in REQUIREMENTS.lines() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                assert!(line.contains("=="), "not pinned: {line}");
            }
        }
    }
}

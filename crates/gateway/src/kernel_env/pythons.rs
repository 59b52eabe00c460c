//! The CPythons a machine has, and the kernel environment's default interpreter: the newest of them that can make
//! it. Newer is faster here: on 3.12+ the zygote makes its preloaded objects immortal (half the copy-on-write page
//! faults of a kernel's start), which 3.11 cannot do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::probe::probe_python;
use super::MIN_PYTHON;

/// The newest `3.X` the kernel environment's pinned packages are tested on (the `pythons` test runs kernels of
/// every version found here); a newer one is used only when given with `--python`.
pub const NEWEST_TESTED: (u32, u32) = (3, 13);

/// Every CPython from [`MIN_PYTHON`] to [`NEWEST_TESTED`] found as `python3.X` on `PATH`, as `python3`, or in
/// pyenv's versions (`$PYENV_ROOT`, default `~/.pyenv`): one interpreter per `(major, minor)`, the newest patch
/// release among those found. Runs each candidate once to ask its version.
pub fn installed_pythons() -> BTreeMap<(u32, u32), PathBuf> {
    let mut candidates: Vec<PathBuf> =
        (MIN_PYTHON.1..=NEWEST_TESTED.1).map(|m| format!("python3.{m}").into()).collect();
    candidates.push("python3".into());
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    if let Some(versions) = pyenv.and_then(|root| std::fs::read_dir(root.join("versions")).ok()) {
        candidates.extend(versions.flatten().map(|version| version.path().join("bin").join("python3")));
    }
    let mut found: Vec<((u32, u32, u32), PathBuf)> = candidates
        .into_iter()
        .filter_map(|python| Some((version_of(&python)?, python)))
        .filter(|((major, minor, _), _)| (MIN_PYTHON..=NEWEST_TESTED).contains(&(*major, *minor)))
        .collect();
    // Newest first (a stable sort: on a tie, the earlier candidate), then the first of each minor version.
    found.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let mut newest = BTreeMap::new();
    for ((major, minor, _), python) in found {
        newest.entry((major, minor)).or_insert(python);
    }
    newest
}

/// The interpreter to make the kernel environment from when none is given: the newest of [`installed_pythons`] that
/// can make a virtualenv with pip; `python3` (whose failure then explains itself) if none can.
pub(super) async fn default_python() -> PathBuf {
    let installed = tokio::task::spawn_blocking(installed_pythons).await.unwrap_or_default();
    for (_, python) in installed.into_iter().rev() {
        if probe_python(&python).await.is_ok() {
            return python;
        }
    }
    PathBuf::from("python3")
}

/// `sys.version_info[:3]` of `python`, if it runs and is a CPython.
fn version_of(python: &Path) -> Option<(u32, u32, u32)> {
    let code = "import sys; print(sys.implementation.name, *sys.version_info[:3])";
    let output = Command::new(python).args(["-c", code]).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        ["cpython", major, minor, micro] => Some((major.parse().ok()?, minor.parse().ok()?, micro.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python3_on_path_is_among_the_installed_ones() {
        // CI's machine has a python3 of a supported version; it (or a newer patch of the same minor) is listed.
        let (major, minor, _) = version_of(Path::new("python3")).expect("python3 runs");
        let installed = installed_pythons();
        let python = installed.get(&(major, minor)).expect("python3's version is listed");
        assert_eq!(version_of(python).map(|(a, b, _)| (a, b)), Some((major, minor)));
        assert!(installed.keys().all(|v| (MIN_PYTHON..=NEWEST_TESTED).contains(v)), "{installed:?}");
    }

    #[test]
    fn a_program_that_is_not_cpython_has_no_version() {
        assert_eq!(version_of(Path::new("/nonexistent/python3")), None);
        assert_eq!(version_of(Path::new("true")), None);
    }
}

//! Both launchers on every other CPython (3.12 and later) this machine has besides `python3`: each version gets a
//! kernel environment of its own (made once under the data directory, as the default one is) and must start kernels
//! that run user code. The zygote's fork protocol differs between versions (3.13 aborted every kernel at its start
//! when the zygote had not taken the import lock before forking). A test binary of its own, so that building those
//! environments does not run alongside the timing-sensitive tests of the `it` suite.
#![allow(dead_code)] // the `it` suite's harness, of which this binary uses a part

#[path = "it/util.rs"]
mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use util::{user, TestServer, TOKEN};

/// `major.minor` of the interpreter `python`, if it runs.
fn version_of(python: &Path) -> Option<String> {
    let code = "import sys; print('%d.%d' % sys.version_info[:2])";
    let output = std::process::Command::new(python).args(["-c", code]).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The CPythons 3.12+ found as `python3.X` on `PATH` or in pyenv's versions, one per version, without the version
/// `python3` is.
fn other_pythons() -> BTreeMap<String, PathBuf> {
    let default = version_of(Path::new("python3"));
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    let mut found = BTreeMap::new();
    for minor in 12..=14 {
        let name = format!("python3.{minor}");
        let mut candidates = vec![PathBuf::from(&name)];
        if let Some(versions) = pyenv_root.as_ref().and_then(|root| std::fs::read_dir(root.join("versions")).ok()) {
            let mut installed: Vec<PathBuf> = versions.flatten().map(|v| v.path().join("bin").join(&name)).collect();
            installed.sort();
            candidates.extend(installed);
        }
        for python in candidates {
            match version_of(&python) {
                Some(version) if Some(&version) != default.as_ref() => {
                    found.entry(version).or_insert(python);
                    break;
                }
                _ => {}
            }
        }
    }
    found
}

/// Kernels of each launcher on each other CPython run user code: threads that import, numpy, pandas, a plot, a
/// random generator that differs between two sessions (the second forked after the first ran).
#[tokio::test]
async fn kernels_run_on_every_other_cpython_here() {
    let pythons = other_pythons();
    if pythons.is_empty() {
        eprintln!("SKIPPED kernels_run_on_every_other_cpython_here: no CPython 3.12+ here besides python3");
        return;
    }
    let code = "import sys, threading, random, numpy, pandas, matplotlib.pyplot as plt\n\
                imported = threading.Thread(target=__import__, args=('xml.dom.minidom',))\n\
                imported.start(); imported.join()\n\
                plt.plot([1, 2]); plt.show()\n\
                print('%d.%d' % sys.version_info[:2], 'xml.dom.minidom' in sys.modules, random.random())";
    for (version, python) in pythons {
        let env = util::kernel_env_named(&format!("kernel-env-{version}"), &python);
        for launcher in ["zygote", "exec"] {
            let data_dir = tempfile::Builder::new().prefix("ci-test-").tempdir().unwrap();
            let flags = ["--launcher", launcher, "--warm-sandboxes", "1", "--max-sandboxes", "4"];
            let server = TestServer::start_on_env(data_dir.path(), &env, &flags, TOKEN, "gateway=info");
            let api = server.client();
            let mut randoms = Vec::new();
            for session in ["first", "second"] {
                let (status, body) = api.execute(&user(session), code).await;
                assert_eq!(status, 200, "{version} {launcher}: {body}");
                let printed = body["result_text"].as_str().unwrap().to_owned();
                let fields: Vec<&str> = printed.split_whitespace().collect();
                assert_eq!(fields[..2], [version.as_str(), "True"], "{version} {launcher}: {printed}");
                assert!(body["result_base64"].as_str().is_some_and(|png| png.len() > 1000), "{version} {launcher}");
                randoms.push(fields[2].to_owned());
            }
            assert_ne!(randoms[0], randoms[1], "{version} {launcher}: two sessions drew the same number");
            assert!(server.stop(), "{version} {launcher}: the server stops");
        }
    }
}

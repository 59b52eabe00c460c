//! Both launchers on every other supported CPython this machine has besides the one the default kernel environment
//! was made from (`kernel_env::installed_pythons`: 3.11 to 3.13): each version gets a kernel environment of its own
//! (made once under the data directory, as the default one is) and must start kernels that run user code. The
//! zygote's fork protocol differs between versions (3.13 aborted every kernel at its start when the zygote had not
//! taken the import lock before forking), and so does what it does to the preloaded objects (immortal on 3.12+). A
//! test binary of its own, so that building those environments does not run alongside the timing-sensitive tests of
//! the `it` suite.
#![allow(dead_code)] // the `it` suite's harness, of which this binary uses a part

#[path = "it/util.rs"]
mod util;

use std::collections::BTreeMap;
use std::path::PathBuf;

use util::{user, TestServer, TOKEN};

/// The supported CPythons found here, by `(major, minor)`, without the default kernel environment's.
fn other_pythons() -> BTreeMap<(u32, u32), PathBuf> {
    let default = gateway::kernel_env::existing(&util::kernel_env()).expect("the default kernel environment");
    gateway::kernel_env::installed_pythons()
        .into_iter()
        .filter(|((major, minor), _)| !default.python_version.starts_with(&format!("{major}.{minor}.")))
        .collect()
}

/// Kernels of each launcher on each other CPython run user code: threads that import, numpy, pandas, a plot, a
/// random generator that differs between two sessions (the second forked after the first ran).
#[tokio::test]
async fn kernels_run_on_every_other_cpython_here() {
    let pythons = other_pythons();
    if pythons.is_empty() {
        eprintln!("SKIPPED kernels_run_on_every_other_cpython_here: no other supported CPython here");
        return;
    }
    let code = "import sys, threading, random, numpy, pandas, matplotlib.pyplot as plt\n\
                imported = threading.Thread(target=__import__, args=('xml.dom.minidom',))\n\
                imported.start(); imported.join()\n\
                plt.plot([1, 2]); plt.show()\n\
                immortal = sys.getrefcount(numpy.linspace) >= 2**32 - 1\n\
                print('%d.%d' % sys.version_info[:2], 'xml.dom.minidom' in sys.modules, immortal, random.random())";
    for ((major, minor), python) in pythons {
        let version = format!("{major}.{minor}");
        let env = util::kernel_env_named(&format!("kernel-env-{version}"), Some(&python));
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
                // The zygote makes its preloaded objects immortal where CPython has such objects (3.12+).
                let immortal = launcher == "zygote" && minor >= 12;
                assert_eq!(fields[2], if immortal { "True" } else { "False" }, "{version} {launcher}: {printed}");
                assert!(body["result_base64"].as_str().is_some_and(|png| png.len() > 1000), "{version} {launcher}");
                randoms.push(fields[3].to_owned());
            }
            assert_ne!(randoms[0], randoms[1], "{version} {launcher}: two sessions drew the same number");
            assert!(server.stop(), "{version} {launcher}: the server stops");
        }
    }
}

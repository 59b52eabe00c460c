//! Isolation seen from inside a kernel (network, files, identity, processes), under both launchers.

use crate::util::{both_launchers, user};

/// A kernel cannot connect to a listener on the host's loopback.
#[tokio::test]
async fn no_connection_to_host_loopback() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ns = socket.socket()\ns.settimeout(2)\n\
         try:\n    s.connect(('127.0.0.1', {port})); print('connected')\n\
         except OSError as e:\n    print('refused', type(e).__name__)"
    );
    for (launcher, server) in both_launchers() {
        let api = server.client();
        let text = api.run_ok(&user("net"), &code).await;
        assert!(text.starts_with("refused"), "{launcher}: {text}");
        let interfaces =
            api.run_ok(&user("net-if"), "import socket; sorted(n for _, n in socket.if_nameindex())").await;
        assert_eq!(interfaces, "['lo']", "{launcher}");
    }
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing reached the host listener");
}

/// Neither the repository, the data directory, nor anything of /root but the Python install are visible; / is
/// read-only.
#[tokio::test]
async fn host_files_are_not_visible() {
    for (launcher, server) in both_launchers() {
        let api = server.client();
        let data_dir = server.data_dir.display().to_string();
        let repo = env!("CARGO_MANIFEST_DIR");
        let code = format!(
            "import os\nprint([os.path.exists(p) for p in ['/work', {repo:?}, '/root/.cargo', {data_dir:?}, \
             '/etc/shadow']], os.listdir('/root') if os.path.exists('/root') else ['.pyenv'])"
        );
        let text = api.run_ok(&user("files"), &code).await;
        assert_eq!(text, "[False, False, False, False, False] ['.pyenv']\n", "{launcher}");
        let code = "import os\nout = []\nfor p in ['/usr/x', '/x', '/etc/x', '/sandbox/x', '/tmp/x']:\n    \
                    try:\n        open(p, 'w').write('1'); out.append('w')\n    \
                    except OSError:\n        out.append('ro')\nprint(out, os.getcwd())";
        assert_eq!(api.run_ok(&user("ro"), code).await, "['ro', 'ro', 'ro', 'w', 'w'] /sandbox\n", "{launcher}");
    }
}

/// The kernel runs as an unprivileged uid with no capabilities and no_new_privs.
#[tokio::test]
async fn kernel_is_unprivileged() {
    let code = "import os\nstatus = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() \
                if ':\\t' in l)\nprint(os.getuid(), os.geteuid(), status['CapEff'].strip(), status['CapBnd'].strip(), \
                status['NoNewPrivs'].strip(), status['Seccomp'].strip())";
    for (launcher, server) in both_launchers() {
        let text = server.client().run_ok(&user("uid"), code).await;
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_ne!(fields[0], "0", "{launcher}: {text}");
        assert_ne!(fields[1], "0", "{launcher}: {text}");
        assert_eq!(&fields[2..], ["0000000000000000", "0000000000000000", "1", "2"], "{launcher}: {text}");
    }
}

/// The process list shows only the session's own processes; host and other sessions are invisible.
#[tokio::test]
async fn process_list_is_private() {
    for (launcher, server) in both_launchers() {
        let api = server.client();
        let other = user("ps-other");
        api.run_ok(&other, "import time").await;
        let code = "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n\
                    print(len(pids), max(pids))";
        let text = api.run_ok(&user("ps"), code).await;
        let fields: Vec<&str> = text.split_whitespace().collect();
        let count: usize = fields[0].parse().unwrap();
        let max_pid: u32 = fields[1].parse().unwrap();
        assert!(count <= 4, "{launcher}: only init and the kernel (and its helpers): {text}");
        assert!(max_pid < 100, "{launcher}: pids are the namespace's own: {text}");
        let host_pid = std::process::id();
        let code = format!("import os\nos.path.exists('/proc/{host_pid}') and {host_pid} > 100");
        assert_eq!(api.run_ok(&user("ps2"), &code).await, "False", "{launcher}");
    }
}

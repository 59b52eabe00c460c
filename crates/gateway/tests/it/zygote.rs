//! What the zygote must not change, and what it must not share: kernels forked from it look exactly like exec'd
//! ones, share no mutable state with each other, and a dead zygote is replaced.

use std::time::Duration;

use crate::util::{both_launchers, shared, user, TestServer};

/// What a kernel sees of its interpreter and process: identical under both launchers.
const SELF_PORTRAIT: &str = "import os, sys, json\n\
    print(json.dumps({'env': dict(os.environ), 'prefix': sys.prefix, 'base_prefix': sys.base_prefix, \
    'executable': sys.executable, 'path': sys.path, 'argv': sys.argv[1:], 'cwd': os.getcwd(), \
    'pid': os.getpid(), 'ppid': os.getppid(), 'umask': os.umask(0o22), 'flags': str(sys.flags), \
    'main': sorted(k for k in globals() if not k.startswith('_')), 'mpl': __import__('matplotlib').get_backend(), \
    'user_main': sys.modules['__main__'].__dict__ is globals(), 'cmdline': open('/proc/self/cmdline').read(), \
    'comm': open('/proc/self/comm').read(), 'dumpable': __import__('ctypes').CDLL(None).prctl(3, 0, 0, 0, 0), \
    'fork_visible': fork_visible(), \
    'threads': sorted(t.name.split(' ')[-1] for t in __import__('threading').enumerate()), \
    'app': [type(get_ipython().kernel.parent).__name__, get_ipython().kernel.parent.heartbeat is None, \
    get_ipython().kernel.shell_channel_thread is None, get_ipython().kernel.parent.debug_shell_socket is None, \
    hasattr(get_ipython().kernel, 'debugger'), type(get_ipython().kernel).__name__, \
    get_ipython().kernel.log.isEnabledFor(10), get_ipython().kernel.log.isEnabledFor(30)], \
    'kernel_modules': [any(p in f for f in get_ipython().kernel._kernel_modules) for p in ('/ipykernel/', '/numpy/')], \
    'home': sorted((os.path.relpath(d, '/sandbox'), \
    oct(os.stat(d).st_mode), sorted(f)) for d, _, f in os.walk('/sandbox')), 'shell': shell_portrait(get_ipython()), \
    'ipython_dir': sorted([os.path.relpath(d, '/tmp/.ipython'), oct(os.stat(d).st_mode), \
    os.stat(d).st_uid == os.getuid(), sorted(f)] for d, _, f in os.walk('/tmp/.ipython'))}, sort_keys=True))";

/// Whether a forked child of the kernel shows in its `/proc` (mounted with `hidepid=2`).
const FORK_VISIBLE: &str = "def fork_visible():\n    \
    pid = os.fork()\n    \
    if pid == 0:\n        \
        __import__('time').sleep(5)\n        \
        os._exit(0)\n    \
    seen = str(pid) in os.listdir('/proc')\n    \
    os.kill(pid, 9)\n    \
    os.waitpid(pid, 0)\n    \
    return seen";

/// The kernel's shell: what it took from its process (cwd, environment, `__main__`) and its kernel.
const SHELL_PORTRAIT: &str = "def shell_portrait(ip):\n    \
    return {'starting_dir': ip.starting_dir, 'dh': [str(d) for d in ip.user_ns['_dh']], \
    'kernel': ip.kernel is ip.parent and ip.kernel.shell is ip, 'user_ns': ip.kernel.user_ns is ip.user_ns, \
    'main': sys.modules['__main__'] is ip.user_module, 'history': ip.history_manager.session_number, \
    'history_dirs': [str(d) for d in ip.history_manager.dir_hist], 'count': ip.execution_count, \
    'configurables': sorted(type(c).__name__ for c in ip.configurables), 'pager': os.environ.get('PAGER'), \
    'reset_keeps': sorted(m for m in ('ipykernel', 'IPython.core.shellapp', 'tabnanny') if m in ip._sys_modules_keys), \
    'home_dir': ip.home_dir, 'extensions': sorted(ip.extension_manager.loaded), \
    'magics': sorted(ip.magics_manager.lsmagic()['line']), \
    'history_since_start': str(ip.history_manager.get_session_info(0)[1]) >= \
        str(__import__('datetime').datetime.fromtimestamp(__import__('psutil').Process().create_time())), \
    'saved': {k: type(v).__name__ for k, v in ip._orig_sys_module_state.items()}, \
    'saved_main': ip._orig_sys_modules_main_mod not in (None, ip.user_module)}";

#[tokio::test]
async fn both_launchers_give_the_same_kernel() {
    let mut portraits = Vec::new();
    for (launcher, server) in both_launchers() {
        let api = server.client();
        let who = user("portrait");
        // tabnanny: a module imported after the start, which `%reset --aggressive` would remove.
        api.run_ok(&who, &format!("import sys, os, tabnanny\n{SHELL_PORTRAIT}\n{FORK_VISIBLE}")).await;
        let text = api.run_ok(&who, SELF_PORTRAIT).await;
        let mut portrait: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Per-process values the kernel sets itself.
        for volatile in ["JPY_PARENT_PID", "JPY_SESSION_NAME"] {
            portrait["env"].as_object_mut().unwrap().remove(volatile);
        }
        // The one difference: the exec launcher's kernel is the child of the sandbox's init (pid 1); the zygote's
        // is forked by the zygote itself, outside the namespace (its pid 1 is a reaper started for it).
        let ppid = portrait.as_object_mut().unwrap().remove("ppid").unwrap();
        assert_eq!(ppid, if launcher == "zygote" { 0 } else { 1 }, "{launcher}: the kernel's parent pid");
        portraits.push((launcher, portrait));
    }
    let (zygote, exec) = (&portraits[0].1, &portraits[1].1);
    assert_eq!(zygote, exec, "zygote and exec kernels differ");
    assert_eq!(zygote["prefix"], "/opt/kernel-env");
    assert_eq!(zygote["pid"], 2, "the kernel is the second process of its pid namespace");
    assert_eq!(zygote["mpl"], "module://matplotlib_inline.backend_inline");
    assert_eq!(zygote["comm"], "python\n", "ps shows the kernel as python");
    // As after an exec: the kernel's own processes see it and it sees its forks.
    assert_eq!((&zygote["dumpable"], &zygote["fork_visible"]), (&serde_json::json!(1), &serde_json::json!(true)));
    // code_interpreter_kernel: ipykernel without its shell-channel thread, heartbeat and debugger (two fd watchers
    // capture output written to the process's stdout and stderr), whose log makes no records it would drop (its
    // handler takes warnings and up).
    let app = serde_json::json!(["KernelApp", true, true, true, false, "Kernel", false, true]);
    assert_eq!(zygote["app"], app);
    let threads = serde_json::json!(["(_watch_pipe_fd)", "(_watch_pipe_fd)", "Control", "IOPub", "MainThread"]);
    assert_eq!(zygote["threads"], threads, "the kernel's Python threads");
    assert_eq!(zygote["shell"]["dh"], serde_json::json!(["/sandbox"]), "the shell took the zygote's cwd");
    // IPython's profile, made by the sandbox for the kernel's user, with the modes IPython wants.
    let ipython_dir = serde_json::json!([
        [".", "0o40755", true, []],
        ["profile_default", "0o40755", true, []],
        ["profile_default/log", "0o40755", true, []],
        ["profile_default/pid", "0o40700", true, []],
        ["profile_default/security", "0o40700", true, []],
        ["profile_default/startup", "0o40755", true, []],
    ]);
    assert_eq!(zygote["ipython_dir"], ipython_dir);
    let keeps = serde_json::json!(["IPython.core.shellapp", "ipykernel"]);
    assert_eq!(zygote["shell"]["reset_keeps"], keeps, "the modules the shell had when it started");
    // The shell was made before the fork: what it took from its process is the kernel's, not the zygote's.
    assert_eq!(zygote["shell"]["history_since_start"], true, "the history session began before the kernel did");
    assert_eq!(zygote["shell"]["saved"]["stdout"], "OutStream", "the streams the shell restores at exit");
    // The shell's default extension and its magics (the shell is made in the zygote, the extension in the kernel).
    assert_eq!(zygote["shell"]["extensions"], serde_json::json!(["IPython.extensions.storemagic"]));
    assert!(zygote["shell"]["magics"].as_array().unwrap().contains(&serde_json::json!("store")));
}

/// A stream with nothing in it flushes without waiting on the IOPub thread (ipykernel would make a round trip to it
/// at every flush); one holding output still hands it over, and the output arrives, in order.
#[tokio::test]
async fn empty_streams_flush_without_the_iopub_thread() {
    let api = shared().client();
    let code = r#"
import sys
pub = sys.stdout.pub_thread
handed = []
schedule = pub.schedule
pub.schedule = lambda f: (handed.append(f), schedule(f))[1]
try:
    sys.stderr.flush()
    empty = len(handed)
    sys.stdout.write('a')
    sys.stdout.flush()
    written = len(handed)
finally:
    del pub.schedule
print('', empty, written > empty)
"#;
    assert_eq!(api.run_ok(&user("flush"), code).await, "a 0 True\n");
}

/// Kernels forked from one zygote start from the same memory but share nothing: a change in one is invisible in
/// another, and their random generators are seeded apart. The heavy modules are already imported.
#[tokio::test]
async fn zygote_kernels_share_nothing_mutable() {
    let api = shared().client();
    let code = "import sys, random, numpy as np\nalready = 'pandas' in sys.modules\n\
                draws = [random.getrandbits(64), int(np.random.randint(1 << 62)), int(np.random.default_rng().integers(1 << 62))]\n\
                print(np.pi, already, draws)\nnp.pi = 3\nrandom.seed(1)";
    let first = api.run_ok(&user("cow-a"), code).await;
    let second = api.run_ok(&user("cow-b"), code).await;
    assert!(first.starts_with("3.141592653589793 True ["), "{first}");
    assert!(second.starts_with("3.141592653589793 True ["), "the first kernel's change leaked: {second}");
    let draws = |text: &str| text.split('[').nth(1).unwrap().trim_end_matches([']', '\n']).to_owned();
    let (a, b) = (draws(&first), draws(&second));
    for (x, y) in a.split(", ").zip(b.split(", ")) {
        assert_ne!(x, y, "two kernels drew the same random number: {a} / {b}");
    }
}

/// On CPython 3.12+ the zygote's preloaded objects are immortal in its kernels (their reference counts are never
/// written, so their pages are not copied), while what a kernel makes stays mortal and is freed; on 3.11 there is no
/// such thing and nothing changes.
#[tokio::test]
async fn zygote_preloaded_objects_are_immortal_from_3_12() {
    let api = shared().client();
    let code = "import sys, weakref, numpy\nclass Mine: pass\nmine = Mine()\ngone = []\n\
                weakref.finalize(mine, gone.append, 1)\ndel mine\n\
                print(sys.version_info >= (3, 12), sys.getrefcount(numpy.linspace) >= 2**32 - 1, gone)";
    let printed = api.run_ok(&user("immortal"), code).await;
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields[1], fields[0], "preloaded objects immortal exactly on 3.12+: {printed}");
    assert_eq!(fields[2], "[1]", "a kernel's own object is freed when its last reference goes: {printed}");
}

/// Host pid of the server's zygote (a child of the server whose command line says `__zygote`).
fn zygote_pid(server_pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat.rsplit(") ").next()?.split_whitespace().nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_zygote = cmdline.split(|b| *b == 0).nth(1) == Some(b"__zygote".as_slice());
        (ppid == server_pid && is_zygote).then_some(pid)
    })
}

/// When the zygote dies, its kernels die with it (their users are told their state is lost), and the next
/// kernel comes from a new zygote.
#[tokio::test]
async fn a_dead_zygote_is_replaced() {
    let server = TestServer::start(&["--warm-sandboxes", "1"]);
    let api = server.client();
    api.wait_ready().await;
    let who = user("zygote-dies");
    api.run_ok(&who, "x = 1").await;
    let old = zygote_pid(server.pid()).expect("the server has a zygote");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = api.execute(&who, "x").await;
    assert_eq!((status, body["reason"].as_str(), body["state_lost"].as_bool()), (400, Some("kernel_died"), Some(true)));
    assert_eq!(api.run_ok(&who, "'again'").await, "'again'");
    assert_eq!(api.run_ok(&user("zygote-new"), "'new'").await, "'new'");
    let new = zygote_pid(server.pid()).expect("a new zygote");
    assert_ne!(new, old);
}

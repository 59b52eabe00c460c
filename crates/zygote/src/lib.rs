//! The zygote (`code-interpreter __zygote`, its config the first line of stdin): a [`sandbox::forkserver`] whose payload is one pre-loaded
//! CPython. It enters a root of its own that shows the kernel env where sandboxes see it, loads the env's
//! libpython, imports what every kernel needs (`python/zygote.py`), freezes the heap for copy-on-write, and forks:
//! each child raises the sandbox's walls (the same Rust code as the exec launcher) and becomes an ipykernel.
//!
//! - `python`: libpython through `dlopen`; `arenas`: pymalloc's arenas side by side while preloading; `immortal`:
//!   the preloaded objects made immortal (3.12+); `huge_pages`: the heap in huge pages before the first fork. The
//!   only `unsafe`.

mod arenas;
mod huge_pages;
mod immortal;
mod python;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sandbox::forkserver::{self, InProcess, ServerError};
use sandbox::Policy;
use serde::{Deserialize, Serialize};

pub use python::{Python, PythonError};

/// The Python side: `preload(config)` once in the zygote, `start(request)` in each sandbox.
const ZYGOTE_PY: &str = include_str!("../../../python/zygote.py");

/// What the gateway passes to `__zygote`: one JSON line on its stdin, before the fork server's requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The zygote's own root (only its mounts are used): the kernel env, the base interpreter and `/usr` at the
    /// paths every sandbox sees them.
    pub root: Policy,
    /// The env's libpython, as seen in that root.
    pub libpython: PathBuf,
    /// The interpreter the zygote is, as seen in that root: the venv's `bin/python`, so `sys.prefix` is the venv.
    pub program: PathBuf,
    /// Passed to the Python side's `preload` (see `python/zygote.py`).
    pub preload: serde_json::Value,
}

/// Why the zygote could not start.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("the gateway (our parent) has gone")]
    ParentGone,
    #[error("setting the parent-death signal")]
    Pdeathsig(#[source] nix::Error),
    #[error("parsing the zygote config")]
    Config(#[source] serde_json::Error),
    #[error("stdin closed before the config line")]
    NoConfig,
    #[error("reading the config line")]
    ReadConfig(#[source] nix::Error),
    #[error("entering the zygote's root")]
    Root(#[source] ServerError),
    #[error("starting Python")]
    Python(#[source] PythonError),
    #[error("preloading left {0} threads running: a fork would lose them (check *_NUM_THREADS)")]
    Threads(usize),
}

/// Entry point of `__zygote`; never returns. On a start-up failure, explains it on stderr and exits 1.
pub fn main() -> ! {
    let Err(error) = run();
    let mut line = format!("zygote: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let _ = writeln!(std::io::stderr(), "{line}");
    std::process::exit(1)
}

fn run() -> Result<std::convert::Infallible, Error> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::Pdeathsig)?;
    if nix::unistd::getppid().as_raw() == 1 {
        return Err(Error::ParentGone);
    }
    let config: Config = serde_json::from_slice(&read_config_line()?).map_err(Error::Config)?;
    let host = forkserver::enter_root(&config.root).map_err(Error::Root)?;
    let python = Python::load(&config.libpython).map_err(Error::Python)?;
    python.initialize(&config.program).map_err(Error::Python)?;
    if let Some(allocator) = arenas::allocator() {
        python.set_arena_allocator(allocator);
    }
    python.run("zygote", ZYGOTE_PY).map_err(Error::Python)?;
    let preload = serde_json::to_vec(&config.preload).map_err(Error::Config)?;
    python.run("preload", &call("preload", &preload)).map_err(Error::Python)?;
    immortal::apply(&python).map_err(Error::Python)?;
    python.run("freeze", "freeze()").map_err(Error::Python)?;
    let threads = wait_for_one_thread();
    if threads != 1 {
        return Err(Error::Threads(threads));
    }
    // Python's fork protocol spread over the zygote's life: the locks a fork needs taken, once, as it runs no
    // Python again; each child's `PyOS_AfterFork_Child` gives them back in that child.
    python.before_forks();
    arenas::seal();
    huge_pages::collapse_heap();
    forkserver::serve(host, &Kernel { python })
}

/// How long threads that preloading joined may take to leave `/proc/self/task`.
const THREAD_EXIT_GRACE: Duration = Duration::from_secs(1);

/// The number of threads this process has, once it is 1 or [`THREAD_EXIT_GRACE`] has passed: a thread that was
/// joined (the preload's rehearsal starts and joins some) can still be in the task list for a moment after.
fn wait_for_one_thread() -> usize {
    let deadline = Instant::now() + THREAD_EXIT_GRACE;
    loop {
        let threads = std::fs::read_dir("/proc/self/task").map(Iterator::count).unwrap_or(0);
        if threads == 1 || Instant::now() >= deadline {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The first line of stdin, read a byte at a time: what follows belongs to the fork server.
fn read_config_line() -> Result<Vec<u8>, Error> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(std::io::stdin(), &mut byte) {
            Ok(0) => return Err(Error::NoConfig),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => line.push(byte[0]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(Error::ReadConfig(errno)),
        }
    }
}

/// Python code calling `function` with `argument` as a `bytes` object (hex-encoded: no quoting to get wrong).
fn call(function: &str, argument: &[u8]) -> String {
    format!("{function}(bytes.fromhex('{}'))", hex::encode(argument))
}

/// The payload: the forked interpreter becomes the policy's ipykernel.
struct Kernel {
    python: Python,
}

/// Python's fork hooks around each fork are left out: `PyOS_BeforeFork` ran once before serving and its locks
/// stay taken (the zygote runs no Python between forks), and `PyOS_AfterFork_Parent` would only give them back to
/// take them again. Run around every fork, the pair writes to ~70 of the zygote's pages, each one a page it then
/// copies from the sandboxes already made. The child's `PyOS_AfterFork_Child` resets the locks and threads (and
/// from CPython 3.13 on releases the import lock, which must therefore be held: a fatal error otherwise).
impl InProcess for Kernel {
    fn before_fork(&self) {}

    fn after_fork_parent(&self) {}

    fn run(&self, policy: &Policy) -> i32 {
        self.python.after_fork_child();
        let request = serde_json::json!({ "argv": policy.argv, "env": policy.env });
        let request = serde_json::to_vec(&request).expect("strings always serialize");
        match self.python.run("kernel", &call("start", &request)) {
            Ok(()) => 0,
            Err(error) => {
                let _ = writeln!(std::io::stderr(), "zygote: {error}");
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the bytes, the call is one line of plain Python with only hex digits inside the quotes.
    #[test]
    fn call_is_quote_safe() {
        let code = call("start", b"{\"a\": \"') + os.system('x\"}\n\0");
        assert!(code.starts_with("start(bytes.fromhex('") && code.ends_with("'))"));
        let inner = &code["start(bytes.fromhex('".len()..code.len() - 3];
        assert!(inner.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(hex::decode(inner).unwrap(), b"{\"a\": \"') + os.system('x\"}\n\0");
    }
}

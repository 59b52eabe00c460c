//! A fork server: one long-lived, single-threaded process that prepares something expensive once (a pre-loaded
//! interpreter) and forks a fresh sandbox per request, whose payload runs in-process instead of exec'ing.
//!
//! - `server`: runs in the fork server process: [`enter_root`], then [`serve`] with an [`InProcess`] payload.
//!   It creates each sandbox's cgroup and keeps one sandbox forked ahead (a spare, already in a cgroup of its own,
//!   renamed when it gets a request).
//! - `reaper`: a sandbox's pid 1, a task sharing the server's memory that only reaps (nothing to copy).
//! - `init_process`: a sandbox's first process, forked into the reaper's pid namespace: it waits for its request,
//!   goes back to the host's mount namespace, builds the sandbox as [`crate::spawn`]'s init does, raises the same
//!   walls and becomes the payload in-process.
//! - `client`: the gateway side: [`ForkServer`] starts the server process and turns requests into [`Sandbox`]es
//!   that behave like those of [`crate::spawn`].
//! - this file: the line protocol between them.
//!
//! Requests are JSON lines on the server's stdin; events are text lines on its stdout, written by the server and
//! (`started`) by its children, each with one `write` shorter than `PIPE_BUF`, so lines never interleave.

mod client;
mod init_process;
mod reaper;
mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::ForkServer;
pub use server::{enter_root, serve, HostMountNamespace, InProcess, ServerError};

use crate::Policy;
#[cfg(doc)]
use crate::Sandbox;

/// One sandbox to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    /// The sandbox; its name identifies it in the events.
    pub(crate) policy: Policy,
    /// Host file (created if missing, appended to) that becomes stderr of the sandbox's init and payload:
    /// where a setup failure is explained. Put it on a size-limited filesystem: the payload can write to it.
    pub(crate) stderr: PathBuf,
}

/// What the server reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The server has finished preparing and takes requests.
    Serving { pid: u32 },
    /// The sandbox's payload runs; `init` is the host pid of its first process (which is the payload): its root
    /// is the sandbox's, and killing it ends the sandbox.
    Started { name: String, init: u32 },
    /// The sandbox's init ended with this code: the payload's exit code, 128 + signal, or 125 if setup failed.
    Exited { name: String, code: i32 },
    /// A request line was not understood; nothing was started for it.
    Refused { reason: String },
}

impl Event {
    /// The event as one protocol line, newline included.
    pub(crate) fn line(&self) -> String {
        match self {
            Event::Serving { pid } => format!("serving {pid}\n"),
            Event::Started { name, init } => format!("started {name} {init}\n"),
            Event::Exited { name, code } => format!("exited {name} {code}\n"),
            Event::Refused { reason } => format!("refused {}\n", reason.replace('\n', " ")),
        }
    }

    /// Parses one line (without its newline); `None` if it is not an event.
    pub(crate) fn parse(line: &str) -> Option<Event> {
        let (kind, rest) = line.split_once(' ')?;
        let two = || rest.split_once(' ').filter(|(name, _)| !name.is_empty());
        match kind {
            "serving" => Some(Event::Serving { pid: rest.parse().ok()? }),
            "started" => two().and_then(|(n, p)| Some(Event::Started { name: n.into(), init: p.parse().ok()? })),
            "exited" => two().and_then(|(n, c)| Some(Event::Exited { name: n.into(), code: c.parse().ok()? })),
            "refused" => Some(Event::Refused { reason: rest.into() }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event survives the line format; garbage is not an event.
    #[test]
    fn events_round_trip() {
        for event in [
            Event::Serving { pid: 12 },
            Event::Started { name: "ci-1-abc".into(), init: 4242 },
            Event::Exited { name: "ci-1-abc".into(), code: 137 },
            Event::Exited { name: "x".into(), code: -1 },
            Event::Refused { reason: "bad json: expected value".into() },
        ] {
            let line = event.line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Event::parse(line.trim_end_matches('\n')), Some(event));
        }
        assert_eq!(Event::Refused { reason: "a\nb".into() }.line(), "refused a b\n");
        for junk in ["", "serving", "serving x", "started x", "started  5", "exited x y", "hello world"] {
            assert_eq!(Event::parse(junk), None, "{junk:?}");
        }
    }
}

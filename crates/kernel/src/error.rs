//! The crate's one error type, [`Error`], and [`Channel`], which names the socket an error happened on.

use std::fmt;

/// The Jupyter channel (ZeroMQ socket) a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Requests and replies for execution and introspection (DEALER to the kernel's ROUTER).
    Shell,
    /// Broadcast of outputs and status (SUB to the kernel's PUB).
    IoPub,
    /// Interrupts and shutdown, served even while the kernel is busy (DEALER to ROUTER).
    Control,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Shell => "shell",
            Channel::IoPub => "iopub",
            Channel::Control => "control",
        })
    }
}

/// Everything that can go wrong talking to a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not connect to the kernel's endpoint (socket file never appeared, refused, handshake failed).
    #[error("connecting {channel} to {endpoint}")]
    Connect {
        /// Which socket.
        channel: Channel,
        /// The ZeroMQ endpoint, e.g. `ipc:///run/s/k-1`.
        endpoint: String,
        /// Why.
        #[source]
        source: zeromq::ZmqError,
    },
    /// A socket could not bind its endpoint (the fake kernel's side of [`Error::Connect`]).
    #[error("binding {channel} to {endpoint}")]
    Bind {
        /// Which socket.
        channel: Channel,
        /// The ZeroMQ endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: zeromq::ZmqError,
    },
    /// A message could not be handed to the socket.
    #[error("sending {msg_type} on {channel}")]
    Send {
        /// Which socket.
        channel: Channel,
        /// The Jupyter message type being sent.
        msg_type: &'static str,
        /// Why.
        #[source]
        source: zeromq::ZmqError,
    },
    /// Receiving failed, typically because the kernel went away.
    #[error("receiving on {channel}")]
    Recv {
        /// Which socket.
        channel: Channel,
        /// Why.
        #[source]
        source: zeromq::ZmqError,
    },
    /// The kernel closed a socket while we waited on it: it exited or was killed.
    #[error("kernel closed its {channel} socket (did it exit?)")]
    Disconnected {
        /// Which socket.
        channel: Channel,
    },
    /// A message's HMAC signature did not match: it was not sent by someone holding the key.
    #[error("bad message signature on {channel}")]
    Signature {
        /// Which socket.
        channel: Channel,
    },
    /// The ZeroMQ frames do not form a Jupyter message (no delimiter, missing parts).
    #[error("malformed message on {channel}: {problem}")]
    Framing {
        /// Which socket.
        channel: Channel,
        /// What is missing.
        problem: &'static str,
    },
    /// A part of a message was not the JSON the protocol promises.
    #[error("decoding {what}")]
    Decode {
        /// Which part, e.g. `header` or `execute_reply content`.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The kernel answered a control request with an error status.
    #[error("kernel refused {request}: {ename}: {evalue}")]
    Refused {
        /// The request type, e.g. `interrupt_request`.
        request: &'static str,
        /// Exception name reported by the kernel.
        ename: String,
        /// Exception value reported by the kernel.
        evalue: String,
    },
    /// Nothing arrived in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What we were waiting for.
        what: &'static str,
    },
    /// The client (or its control task) is gone.
    #[error("kernel client closed")]
    Closed,
}

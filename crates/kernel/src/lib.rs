//! Jupyter messaging protocol v5 over ZeroMQ: connection files, signing, and an async client. No HTTP, no sandbox.
//!
//! # Layout
//! - [`connection`] holds [`ConnectionInfo`]: the ipc socket paths, key and connection file of one kernel.
//! - `wire` holds headers, HMAC-SHA256 signing and framing of multipart messages.
//! - [`message`] holds request and reply contents: [`Output`], [`ExecuteReply`], [`KernelInfo`].
//! - `socket` connects to ipc endpoints as they appear, sends and receives verified messages.
//! - [`client`] holds [`Client`] (shell + iopub): readiness and execution.
//! - [`control`] holds [`Interrupter`], the control channel, usable while an execution runs.
//! - [`error`] holds [`Error`].
//! - `fake` (feature `fake-kernel`) holds `FakeKernel`, a scripted kernel speaking the real wire protocol.
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), kernel::Error> {
//! use std::time::Duration;
//! let info = kernel::ConnectionInfo::ipc(std::path::Path::new("/run/sessions/1"));
//! // ... write info.connection_file_json(..) where the kernel reads it, start the kernel ...
//! let mut client = kernel::Client::connect(&info).await?;
//! client.wait_ready(Duration::from_secs(10)).await?;
//! let reply = client.execute("print(1 + 1)", &mut |output| println!("{output:?}")).await?;
//! assert_eq!(reply.status, kernel::ExecuteStatus::Ok);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod connection;
pub mod control;
pub mod error;
#[cfg(feature = "fake-kernel")]
mod fake;
pub mod message;
mod socket;
mod wire;

pub use client::Client;
pub use connection::ConnectionInfo;
pub use control::Interrupter;
pub use error::{Channel, Error};
#[cfg(feature = "fake-kernel")]
pub use fake::FakeKernel;
pub use message::{ErrorInfo, ExecuteReply, ExecuteStatus, KernelInfo, LanguageInfo, MimeBundle, Output, StreamName};

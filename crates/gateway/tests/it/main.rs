//! The integration suite: the real `code-interpreter` binary on a loopback port, real sandboxed ipykernels.

mod api;
mod bad_input;
mod escape;
mod execution;
mod files;
mod lifecycle;
mod metrics;
mod openapi;
mod sandbox;
mod util;
mod zygote;

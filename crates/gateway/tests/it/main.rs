//! The integration suite: the real `code-interpreter` binary on a loopback port, real sandboxed ipykernels.

mod api;
mod bad_input;
mod browser;
mod console;
mod escape;
mod execution;
mod files;
mod lifecycle;
mod metrics;
mod openapi;
mod sandbox;
mod util;
mod zygote;

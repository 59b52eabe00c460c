//! Uploads charged to the sandbox: the bytes of an upload are written into `/sandbox` (a tmpfs, so memory) by a
//! short-lived writer process that first joins the sandbox's memory cgroup, so the pages count against the
//! sandbox's memory limit, as files its own code writes do, and never against the gateway's.

use std::io::Write;
use std::path::Path;

/// The hidden subcommand of this binary that is the writer: `code-interpreter __write-charged [PROCS_FILE]`.
pub const WRITER_ARG: &str = "__write-charged";

/// The writer: joins the cgroup whose `cgroup.procs` is `procs_file` (if given), then copies standard input (the
/// upload) to standard output (the temporary file in `/sandbox`). Exits 0, or with the errno of what failed
/// (`ENOSPC` when `/sandbox` is full).
pub fn writer_main(procs_file: Option<&Path>) -> ! {
    // "0": the writing process itself.
    let joined = procs_file.map_or(Ok(()), |procs| std::fs::write(procs, "0"));
    let copied = joined
        .and_then(|()| std::io::copy(&mut std::io::stdin().lock(), &mut std::io::stdout().lock()))
        .and_then(|_| std::io::stdout().flush());
    std::process::exit(match copied {
        Ok(()) => 0,
        Err(err) => err.raw_os_error().unwrap_or(libc::EIO),
    })
}

//! Uploads charged to the sandbox: the bytes of an upload are written into `/sandbox` (a tmpfs, so memory) by a
//! short-lived writer process that first joins the sandbox's memory cgroup, so the pages count against the
//! sandbox's memory limit, as files its own code writes do, and never against the gateway's.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The `cgroup.procs` of the memory cgroup that process `pid` is in, from `/proc/<pid>/cgroup` (cgroup v1's
/// memory hierarchy, or v2's single one); `None` if it cannot be told.
pub(super) fn memory_cgroup_procs(pid: u32) -> Option<PathBuf> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    memory_procs_in(&table, Path::new("/sys/fs/cgroup")).filter(|procs| procs.exists())
}

/// [`memory_cgroup_procs`] of a `/proc/<pid>/cgroup` table, with the cgroup file systems under `root`.
fn memory_procs_in(table: &str, root: &Path) -> Option<PathBuf> {
    let relative = |path: &str| path.trim_start_matches('/').to_owned();
    let v1 = table.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| root.join("memory").join(relative(path)))
    });
    let v2 = || table.lines().find_map(|line| line.strip_prefix("0::")).map(|path| root.join(relative(path)));
    Some(v1.or_else(v2)?.join("cgroup.procs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_memory_cgroup_in_v1_and_v2_tables() {
        let root = Path::new("/cg");
        let v1 = "12:pids:/ci/sbx\n5:memory:/ci/sbx\n0::/user.slice\n";
        assert_eq!(memory_procs_in(v1, root), Some(PathBuf::from("/cg/memory/ci/sbx/cgroup.procs")));
        let v2 = "0::/ci/sbx\n";
        assert_eq!(memory_procs_in(v2, root), Some(PathBuf::from("/cg/ci/sbx/cgroup.procs")));
        assert_eq!(memory_procs_in("3:cpu,cpuacct:/x\n", root), None);
    }
}

//! Running Python children: a clean command, spawn failures as [`EnvError`]s, the tail of their output.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::{io_err, EnvError};

/// How many lines of a failed command's output an error carries.
pub(super) const TAIL_LINES: usize = 25;

/// A command for a Python child: no inherited `PYTHONPATH`/`PYTHONHOME` that could mix in other packages,
/// no stdin, killed if the future driving it is dropped.
pub(super) fn quiet_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        .env_remove("MPLCONFIGDIR")
        .env_remove("MATPLOTLIBRC")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Maps a failure to start `program` to [`EnvError::PythonMissing`] when it does not exist.
pub(super) fn spawn_err(program: &Path, e: std::io::Error) -> EnvError {
    match e.kind() {
        ErrorKind::NotFound => EnvError::PythonMissing { python: program.to_path_buf() },
        ErrorKind::PermissionDenied => {
            EnvError::PythonBroken { python: program.to_path_buf(), detail: "not executable".into() }
        }
        _ => io_err(program)(e),
    }
}

/// The last [`TAIL_LINES`] lines of a finished command's stdout and stderr.
pub(super) fn tail_of_output(out: &std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

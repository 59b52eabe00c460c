//! The exclusive file lock next to the environment that serialises concurrent builders.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{io_err, EnvError};

/// Takes an exclusive `flock` on `path` (created if missing), waiting for the holder if there is one.
/// Released when the returned value is dropped or the process dies.
pub(super) async fn lock_exclusive(path: PathBuf) -> Result<Flock<File>, EnvError> {
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((file, Errno::EWOULDBLOCK)) => {
                eprintln!(
                    "waiting for another process that is creating the kernel environment (lock {})",
                    path.display()
                );
                file
            }
            Err((_, errno)) => return Err(io_err(&path)(errno.into())),
        };
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(io_err(&path)(errno.into())),
            }
        }
    })
    .await
    .expect("the lock task does not panic")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_lock_makes_a_second_caller_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env.lock");
        let first = lock_exclusive(path.clone()).await.unwrap();
        let second = tokio::spawn(lock_exclusive(path));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "second caller must wait");
        drop(first);
        let got = tokio::time::timeout(Duration::from_secs(5), second).await;
        assert!(got.expect("acquired after release").unwrap().is_ok());
    }
}

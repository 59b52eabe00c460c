//! The API token: from `AUTH_TOKEN`, else `<data_dir>/auth_token.txt`, else a new UUID v4 written there (mode 0600).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the token file in the data directory (the original's).
pub const TOKEN_FILE: &str = "auth_token.txt";

/// Where the token came from, so start-up can say where to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The `AUTH_TOKEN` environment variable.
    Env,
    /// An existing token file.
    File(PathBuf),
    /// A token generated now and written to this file.
    Generated(PathBuf),
}

/// The token could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing the token file failed.
    #[error("cannot use the token file {path}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file exists but holds no token.
    #[error("the token file {0} is empty: put a token in it or delete it to get a new one")]
    Empty(PathBuf),
}

/// Reads the token without creating anything: `None` when neither `AUTH_TOKEN` nor the file exists.
pub fn read(data_dir: &Path) -> Result<Option<(String, TokenSource)>, TokenError> {
    if let Some(token) = std::env::var("AUTH_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(Some((token.trim().to_owned(), TokenSource::Env)));
    }
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => Err(TokenError::Empty(path)),
        Ok(text) => Ok(Some((text.trim().to_owned(), TokenSource::File(path)))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenError::Io { path, source }),
    }
}

/// Reads the token, generating and storing a new one if there is none yet.
pub fn load_or_create(data_dir: &Path) -> Result<(String, TokenSource), TokenError> {
    if let Some(found) = read(data_dir)? {
        return Ok(found);
    }
    let path = data_dir.join(TOKEN_FILE);
    let io = |source| TokenError::Io { path: path.clone(), source };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let token = uuid::Uuid::new_v4().to_string();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
    file.write_all(token.as_bytes()).map_err(io)?;
    Ok((token, TokenSource::Generated(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated token is stored owner-only and the same token is read back on the next start.
    #[test]
    fn generated_token_persists_owner_only() {
        if std::env::var_os("AUTH_TOKEN").is_some() {
            eprintln!("SKIPPED: AUTH_TOKEN is set in this environment");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = load_or_create(dir.path()).unwrap();
        assert!(matches!(source, TokenSource::Generated(_)));
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
        let (second, source) = load_or_create(dir.path()).unwrap();
        assert_eq!(first, second);
        assert!(matches!(source, TokenSource::File(_)));
    }
}

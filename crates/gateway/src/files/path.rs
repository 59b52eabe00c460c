//! `UserPath`: a path a client gave for a file in `/sandbox`, checked before anything is touched: relative, no
//! `..`, no NUL, sane lengths. Resolution itself (symlinks, mounts) is refused again by `openat2`.

use std::fmt;

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
const PATH_MAX: usize = 4096;
/// Longest name of one component, in bytes (tmpfs's `NAME_MAX`).
const NAME_MAX: usize = 255;
/// Most components of a path.
const DEPTH_MAX: usize = 64;

/// A validated path below `/sandbox`: its components, none of them empty, `.` or `..`. Empty means `/sandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPath {
    components: Vec<String>,
}

/// Why a path was refused before it was looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It starts with `/`.
    #[error("absolute paths are refused: give the path relative to /sandbox")]
    Absolute,
    /// It has a `..` component.
    #[error("`..` is refused: the path must stay inside /sandbox")]
    ParentComponent,
    /// It contains a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// It, or one of its names, or its depth, is too long.
    #[error("the path is too long: at most {PATH_MAX} bytes, {NAME_MAX} bytes per name, {DEPTH_MAX} levels")]
    TooLong,
    /// It names `/sandbox` itself where a file is needed.
    #[error("the path is empty: name a file below /sandbox")]
    Empty,
}

impl UserPath {
    /// Checks `raw` (already percent-decoded). `.` and empty components (`a//b`, a trailing `/`) are skipped.
    pub fn parse(raw: &str) -> Result<UserPath, PathError> {
        if raw.contains('\0') {
            return Err(PathError::Nul);
        }
        if raw.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if raw.len() > PATH_MAX {
            return Err(PathError::TooLong);
        }
        let mut components = Vec::new();
        for component in raw.split('/') {
            match component {
                "" | "." => {}
                ".." => return Err(PathError::ParentComponent),
                name if name.len() > NAME_MAX => return Err(PathError::TooLong),
                name => components.push(name.to_owned()),
            }
        }
        if components.len() > DEPTH_MAX {
            return Err(PathError::TooLong);
        }
        Ok(UserPath { components })
    }

    /// [`UserPath::parse`], refusing `/sandbox` itself.
    pub fn parse_file(raw: &str) -> Result<UserPath, PathError> {
        let path = UserPath::parse(raw)?;
        if path.components.is_empty() {
            return Err(PathError::Empty);
        }
        Ok(path)
    }

    /// Whether this is `/sandbox` itself.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The components, in order.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The parent's components and the last name; `None` for `/sandbox` itself.
    pub fn split_last(&self) -> Option<(&[String], &str)> {
        self.components.split_last().map(|(name, parent)| (parent, name.as_str()))
    }

    /// The path as `openat2` takes it relative to `/sandbox` (`.` for `/sandbox` itself).
    pub fn relative(&self) -> String {
        if self.components.is_empty() {
            ".".into()
        } else {
            self.components.join("/")
        }
    }
}

impl fmt::Display for UserPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.components.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain relative paths are kept; `.` and empty components are dropped.
    #[test]
    fn relative_paths_are_normalized() {
        assert_eq!(UserPath::parse("a/b.txt").unwrap().components(), ["a", "b.txt"]);
        assert_eq!(UserPath::parse("./a//b/").unwrap().relative(), "a/b");
        assert!(UserPath::parse("").unwrap().is_root());
        assert_eq!(UserPath::parse("").unwrap().relative(), ".");
        assert_eq!(UserPath::parse("..a/b..").unwrap().relative(), "..a/b..", "dots inside names are names");
    }

    /// Each way out is refused by name, before any lookup.
    #[test]
    fn ways_out_are_refused() {
        assert_eq!(UserPath::parse("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(UserPath::parse("../x"), Err(PathError::ParentComponent));
        assert_eq!(UserPath::parse("a/../../x"), Err(PathError::ParentComponent));
        assert_eq!(UserPath::parse("a/.."), Err(PathError::ParentComponent));
        assert_eq!(UserPath::parse("a\0b"), Err(PathError::Nul));
        assert_eq!(UserPath::parse(&"a".repeat(256)), Err(PathError::TooLong));
        assert_eq!(UserPath::parse(&"a/".repeat(65)), Err(PathError::TooLong));
        assert_eq!(UserPath::parse(&"ab/".repeat(1400)), Err(PathError::TooLong));
        assert_eq!(UserPath::parse_file("./"), Err(PathError::Empty));
    }

    /// The last name and its parent split apart for create, rename and unlink.
    #[test]
    fn split_last_gives_parent_and_name() {
        let path = UserPath::parse("a/b/c").unwrap();
        let (parent, name) = path.split_last().unwrap();
        assert_eq!((parent, name), (&["a".to_owned(), "b".to_owned()][..], "c"));
        assert!(UserPath::parse("").unwrap().split_last().is_none());
    }
}

//! Database URLs shared by the servers' stores.

use std::path::{Path, PathBuf};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (`sqlite:PATH`, `sqlite://relative/path`,
    /// `sqlite:///absolute/path`; created with its directory if missing).
    Sqlite,
    /// A PostgreSQL server (`postgres://...` or `postgresql://...`).
    Postgres,
}

impl Backend {
    /// The backend `url` names, or `None` for any other scheme.
    #[must_use]
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The directory of a SQLite file could not be created.
#[derive(Debug)]
pub struct SqliteDirError {
    /// The directory.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// Prepares a `sqlite:` / `sqlite://` URL for opening: creates the file's directory and adds
/// `mode=rwc` (read-write-create) unless the URL sets a mode or names an in-memory database.
///
/// # Errors
/// When the directory cannot be created.
pub fn prepare_sqlite_url(url: &str) -> Result<String, SqliteDirError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, params) = match rest.split_once('?') {
        Some((path, params)) => (path, Some(params)),
        None => (rest, None),
    };
    let in_memory = path.is_empty() || path == ":memory:";
    if !in_memory
        && let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| SqliteDirError {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let read_only = params.is_some_and(|p| p.split('&').any(|p| p == "mode=ro"));
    if !in_memory && !read_only {
        restrict_sqlite_files(Path::new(path)).map_err(|source| SqliteDirError {
            path: PathBuf::from(path),
            source,
        })?;
    }
    Ok(match params {
        None if !in_memory => format!("{url}?mode=rwc"),
        Some(params) if !params.split('&').any(|p| p.starts_with("mode=")) => {
            format!("{url}&mode=rwc")
        }
        _ => url.to_owned(),
    })
}

/// Makes the SQLite database at `path` private before SQLite opens it: creates the file with
/// mode 0600 when it is missing (SQLite then gives its `-wal`, `-shm` and `-journal` files the
/// same mode), and narrows an existing file and its companions to 0600. The databases hold
/// receipts, releases, readings or results, which no other local user may read.
///
/// # Errors
/// When the file cannot be created or its mode changed.
pub fn restrict_sqlite_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.as_os_str().to_os_string();
            name.push(suffix);
            let file = Path::new(&name);
            match std::fs::metadata(file) {
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `url` (a `postgres://` URL) with its database replaced by `database`, keeping the query.
#[must_use]
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(query) => format!("{scheme}://{authority}/{database}?{query}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_read_write_create() {
        let dir = std::env::temp_dir().join(format!("seer-db-test-{}", std::process::id()));
        let url = format!("sqlite:{}/a/b.db", dir.display());
        assert_eq!(prepare_sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.join("a").is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("a/b.db"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "a new database file is private");
            std::fs::write(dir.join("a/b.db-wal"), b"").unwrap();
            std::fs::set_permissions(
                dir.join("a/b.db-wal"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            prepare_sqlite_url(&url).unwrap();
            let mode = std::fs::metadata(dir.join("a/b.db-wal"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "an existing companion file is narrowed"
            );
        }
        assert_eq!(
            prepare_sqlite_url(&format!("{url}?mode=ro")).unwrap(),
            format!("{url}?mode=ro")
        );
        assert_eq!(
            prepare_sqlite_url(&format!("{url}?cache=shared")).unwrap(),
            format!("{url}?cache=shared&mode=rwc")
        );
        assert_eq!(
            prepare_sqlite_url("sqlite::memory:").unwrap(),
            "sqlite::memory:"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn backends_and_redaction() {
        assert_eq!(Backend::of_url("sqlite:a.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://h/db"), None);
        assert_eq!(
            redact_url("postgres://seer:hunter2@db:5432/u?sslmode=require"),
            "postgres://seer:***@db:5432/u?sslmode=require"
        );
        assert_eq!(redact_url("postgres://seer@db/u"), "postgres://seer@db/u");
        assert_eq!(redact_url("sqlite:ka.db"), "sqlite:ka.db");
    }

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

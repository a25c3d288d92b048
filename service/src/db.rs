//! Database URLs shared by the servers' stores.

use std::path::{Path, PathBuf};

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
    Ok(match params {
        None if !in_memory => format!("{url}?mode=rwc"),
        Some(params) if !params.split('&').any(|p| p.starts_with("mode=")) => {
            format!("{url}&mode=rwc")
        }
        _ => url.to_owned(),
    })
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
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

//! Test support (feature `test-support`): one PostgreSQL database per test, for the storage
//! suites that run against both SQLite and PostgreSQL.
//!
//! `SEER_TEST_POSTGRES_URL` names an administrative URL (one that may `CREATE DATABASE`);
//! without it, `postgres://postgres@127.0.0.1:5432/test` (then user `root`) is used. When the
//! variable is unset and nothing listens on 127.0.0.1:5432, [`postgres_admin_url`] returns
//! `None` after printing a note, so the PostgreSQL variants pass without running — except
//! under `CI=true`, where an unusable PostgreSQL fails the test.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test support fails loudly"
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;

use crate::db::with_database;

/// The administrative PostgreSQL URL for tests, or `None` to skip (see the module docs).
///
/// # Panics
/// Under `CI=true` (or when 127.0.0.1:5432 listens) if no user can connect.
pub async fn postgres_admin_url(suite: &str) -> Option<String> {
    if let Ok(url) = std::env::var("SEER_TEST_POSTGRES_URL") {
        return Some(url);
    }
    let required = std::env::var("CI").is_ok_and(|ci| ci == "true");
    if !required
        && tokio::net::TcpStream::connect("127.0.0.1:5432")
            .await
            .is_err()
    {
        eprintln!(
            "note: skipping the PostgreSQL {suite} tests: SEER_TEST_POSTGRES_URL is unset and \
             nothing listens on 127.0.0.1:5432"
        );
        return None;
    }
    let mut failures = Vec::new();
    for user in ["postgres", "root"] {
        let url = format!("postgres://{user}@127.0.0.1:5432/test");
        match admin_pool(&url).await {
            Ok(pool) => {
                pool.close().await;
                return Some(url);
            }
            Err(error) => failures.push(format!("{url}: {error}")),
        }
    }
    panic!(
        "PostgreSQL is required (CI=true or 127.0.0.1:5432 listens) but unusable: {}",
        failures.join("; ")
    );
}

async fn admin_pool(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
}

/// A database created for one test and dropped (even when the test panics) afterwards.
#[derive(Debug)]
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    /// Creates a fresh database named `{prefix}_{pid}_{counter}_{nanos}`.
    ///
    /// # Panics
    /// When the database cannot be created.
    pub async fn create(admin_url: &str, prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{prefix}_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin_pool(admin_url).await.expect("connect to PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        Self {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    /// The database's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside the test's runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let admin = admin_pool(&admin_url).await?;
                let result = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
                admin.close().await;
                result
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

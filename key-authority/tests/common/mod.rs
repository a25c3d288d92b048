//! What the storage suites of the key authority's tests share.

/// Runs each listed `async fn name(db: TestDb)` once per backend: in a `sqlite` module with
/// `TestDb::sqlite()`, and in a `postgres` module with `TestDb::postgres()` (skipped, with the
/// note that function prints, when PostgreSQL cannot be had outside CI). `TestDb` is the
/// calling test file's own type.
macro_rules! backend_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = super::TestDb::postgres().await {
                        super::$test(db).await;
                    }
                }
            )*
        }
    };
}

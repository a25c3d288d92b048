//! SEER's launcher: `seer run` is the project's main job. It starts the key authority, the
//! utility server and one meter client per home as separate processes on an embedded
//! database (SQLite files in a work directory), replays a month of real UCI data for each
//! home, has the key authority release each home's bill, and prints each released bill beside
//! the plaintext bill of the same readings, and each billing group's released hourly totals of
//! the noised analytics lane against the plaintext hourly sums.
//!
//! - [`plan`]: the homes (the UCI household's same month of several years, replayed as one
//!   billing period, plus synthetic homes) and their plaintext bills;
//! - [`process`]: the programs as child processes (start on port 0, SIGTERM);
//! - [`run`]: the phases of a run;
//! - [`fleet`]: `seer fleet`, many homes through utility replicas, job workers and a pool of
//!   key authorities on one PostgreSQL server, checked and measured;
//! - [`group_totals`]: the run's release of each billing group's hourly totals of the noised
//!   analytics lane, and their error against the plaintext hourly sums;
//! - [`report`]: the table and the JSON report;
//! - [`anomaly`]: `seer anomaly`, a CSV through encrypted anomaly scoring and release;
//! - [`forecast`]: `seer forecast`, a home's readings through the encrypted LSTM forecaster
//!   and release;
//! - [`authority`]: the key authority those two start with deep analytics enabled;
//! - [`audit`]: `seer audit verify` and `seer audit list`, an auditor's check of the key
//!   authority's log with its public key alone;
//! - [`pki`]: `seer pki init` and `seer pki issue`, a deployment's CA and certificates for
//!   mutual TLS.
//!
//! The launcher uses only the three programs' command lines and gRPC; it is built without
//! `seer-ckks/secret-key`, so it cannot decrypt anything. (The one-process engine
//! demonstration, which does decrypt, is the example `engine-demo`:
//! `cargo run --release -p seer --example engine-demo`.)

pub mod anomaly;
pub mod audit;
pub mod audit_serve;
pub mod authority;
pub mod daily;
pub mod fleet;
pub mod forecast;
pub mod group_totals;
pub mod pki;
pub mod plan;
pub mod process;
pub mod report;
pub mod run;
mod run_tls;

pub use plan::{Plan, PlanOptions};
pub use report::RunReport;
pub use run::{RunOptions, run};

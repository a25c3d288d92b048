//! `key-authority`: a thin main over the `key_authority` library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use key_authority::auth::{JwtSigningKey, Role, issue_token, parse_lifetime};
use key_authority::{Application, Settings, telemetry};

/// The SEER key authority: holds the CKKS secret key and releases registered results.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML settings file; environment variables prefixed `SEER_KEY_AUTHORITY__` override it
    /// (e.g. `SEER_KEY_AUTHORITY__SERVER__PORT=0`).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Issue a JWT signed with the key authority's key and print it on stdout.
    IssueToken {
        /// household, utility, auditor or admin.
        #[arg(long)]
        role: Role,
        /// The meter a household token is bound to (required for households only).
        #[arg(long)]
        meter_id: Option<String>,
        /// Lifetime: a number with s, m, h, d or w (at most 366 days).
        #[arg(long, default_value = "30d")]
        lifetime: String,
    },
    /// Print the public half of the JWT signing key (PEM), for services that verify tokens.
    JwtPublicKey,
    /// Start the audit log deliberately: verify it and write its anchor file. Needed when key
    /// material exists but the log is new (a brand-new deployment initializes itself); a log
    /// whose anchor exists is only checked, never replaced.
    InitAudit,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init(&settings.log.filter)?;
            let application = Application::build(settings).await?;
            // The one line on stdout, for whoever started us on port 0.
            seer_service::announce(application.local_addr())?;
            application.run_until_stopped().await
        }
        Command::IssueToken {
            role,
            meter_id,
            lifetime,
        } => {
            let lifetime = parse_lifetime(&lifetime)?;
            let token = issue_token(&settings.auth.signing_key_file, role, meter_id, lifetime)
                .with_context(|| {
                    format!(
                        "issuing a token with {}",
                        settings.auth.signing_key_file.display()
                    )
                })?;
            println!("{}", token.token);
            Ok(())
        }
        Command::InitAudit => {
            telemetry::init(&settings.log.filter)?;
            let sequence = key_authority::startup::init_audit(&settings).await?;
            println!(
                "audit log anchored at sequence {sequence} in {}",
                settings.audit_anchor_file().display()
            );
            Ok(())
        }
        Command::JwtPublicKey => {
            let (key, _) = JwtSigningKey::load_or_generate(&settings.auth.signing_key_file)
                .with_context(|| {
                    format!(
                        "opening the JWT signing key {}",
                        settings.auth.signing_key_file.display()
                    )
                })?;
            print!("{}", key.public_key_pem()?);
            Ok(())
        }
    }
}

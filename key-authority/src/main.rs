//! `key-authority`: a thin main over the `key_authority` library.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use key_authority::audit::AuditLog;
use key_authority::auth::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, DEFAULT_ISSUER, Identity, JwtSigningKey,
    MAX_TOKEN_LIFETIME, Role, TokenIssuer, TokenRequest, issue_token, parse_lifetime,
};
use key_authority::enrolment::EnrolmentStore;
use key_authority::revocation::RevokedTokens;
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
        /// Lifetime: a number with s, m, h, d or w (at most 90 days).
        #[arg(long, default_value = "30d")]
        lifetime: String,
        /// The one service the token is for (`seer-key-authority` or `seer-utility-server`);
        /// without it the token is for both, or for the key authority alone for a household
        /// (household tokens name one service and live at most 1h; meters enrol and renew
        /// their own with their device keys).
        #[arg(long)]
        audience: Option<String>,
    },
    /// Issue a one-time enrolment code for a meter (admin action, audited) and print it on
    /// stdout; the meter enrols with `meter-client enrol --code ...`. With `--meters-file`,
    /// one code per meter of the file, printed as `METER_ID CODE` lines.
    EnrolmentCode {
        /// The meter the code enrols.
        #[arg(
            long,
            required_unless_present = "meters_file",
            conflicts_with = "meters_file"
        )]
        meter_id: Option<String>,
        /// A file with one meter id per line (blank lines and lines starting with `#` are
        /// skipped; `-` reads stdin): codes for all of them, in batched transactions, with
        /// the same audit entry per meter as a single code.
        #[arg(long)]
        meters_file: Option<PathBuf>,
        /// Lifetime: a number with s, m, h, d or w.
        #[arg(long, default_value = "24h")]
        lifetime: String,
    },
    /// Revoke a meter's device key (audited): no more tokens, no more receipts.
    RevokeMeter {
        /// The meter.
        #[arg(long)]
        meter_id: String,
    },
    /// Revoke a token (audited): the key authority's gate refuses it from then on (a running
    /// server within two seconds). Give the token itself (`--token FILE`, `-` for stdin: it
    /// must be one this key authority signed; its id and expiry are read from it) or its id
    /// (`--token-id`, as `issue-token` printed it).
    RevokeToken {
        /// A file holding the token.
        #[arg(
            long,
            conflicts_with = "token_id",
            required_unless_present = "token_id"
        )]
        token: Option<PathBuf>,
        /// The token's id (`jti`).
        #[arg(long)]
        token_id: Option<String>,
    },
    /// Print the public half of the JWT signing key (PEM), for services that verify tokens.
    JwtPublicKey,
    /// Print the fingerprints that the other parties pin in their configuration:
    /// `jwt-public-key-sha256 HEX` (the utility's `auth.jwt_public_key_sha256`, `seer audit
    /// --public-key-sha256`) and `public-key-pin PARAMETER_SET=BLAKE3` per key set (the
    /// meters' `--public-key-pin`). Generates missing key material as serving would.
    Fingerprints,
    /// Start the audit log deliberately: verify it and write its anchor file. Needed when key
    /// material exists but the log is new (a brand-new deployment initializes itself); a log
    /// whose anchor exists is only checked, never replaced.
    InitAudit,
    /// Print the settings in effect (defaults, then `--config`, then `SEER_KEY_AUTHORITY__*`
    /// variables) as TOML, database passwords redacted.
    PrintSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init_with(&settings.log)?;
            let application = Application::build(settings).await?;
            // The one line on stdout, for whoever started us on port 0.
            seer_service::announce(application.local_addr())?;
            application.run_until_stopped().await
        }
        Command::IssueToken {
            role,
            meter_id,
            lifetime,
            audience,
        } => {
            let lifetime = parse_lifetime(&lifetime)?;
            let context = || {
                format!(
                    "issuing a token with {}",
                    settings.auth.signing_key_file.display()
                )
            };
            let token = match audience {
                None => issue_token(&settings.auth.signing_key_file, role, meter_id, lifetime)
                    .with_context(context)?,
                Some(audience) => {
                    let key = open_signing_key(&settings)?;
                    let mut request =
                        TokenRequest::new(Identity::try_new(role, meter_id)?, lifetime);
                    request.audience = vec![audience];
                    TokenIssuer::new(key, DEFAULT_ISSUER)
                        .issue(&request)
                        .with_context(context)?
                }
            };
            eprintln!(
                "token id {} (revoke with `key-authority revoke-token --token-id {}`)",
                token.token_id, token.token_id
            );
            println!("{}", token.token);
            Ok(())
        }
        Command::RevokeToken { token, token_id } => {
            let key = open_signing_key(&settings)?;
            let (token_id, expires_at) = match (token, token_id) {
                (Some(path), _) => {
                    let text = if path.as_os_str() == "-" {
                        std::io::read_to_string(std::io::stdin()).context("reading the token")?
                    } else {
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading the token in {}", path.display()))?
                    };
                    let issuer = TokenIssuer::new(Arc::clone(&key), DEFAULT_ISSUER);
                    let caller = [AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER]
                        .iter()
                        .find_map(|audience| issuer.verifier(audience).verify(text.trim()).ok())
                        .context(
                            "the token is not a valid, unexpired token of this key authority \
                             (an expired token needs no revocation)",
                        )?;
                    (caller.token_id().to_owned(), caller.expires_at())
                }
                (None, Some(id)) => (id, SystemTime::now() + MAX_TOKEN_LIFETIME),
                (None, None) => anyhow::bail!("give --token or --token-id"),
            };
            let log = AuditLog::connect(&settings.audit.database_url, key)
                .await
                .with_context(|| {
                    format!("opening the audit log at {}", settings.audit.database_url)
                })?;
            let revoked = RevokedTokens::load(Arc::new(log))
                .await
                .context("reading the revoked tokens")?
                .revoke(&token_id, expires_at)
                .await
                .with_context(|| format!("revoking token {token_id}"))?;
            if revoked {
                eprintln!("token {token_id} revoked");
            } else {
                eprintln!("token {token_id} was revoked already");
            }
            Ok(())
        }
        Command::EnrolmentCode {
            meter_id: None,
            meters_file: Some(file),
            lifetime,
        } => {
            let lifetime = parse_lifetime(&lifetime)?;
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the meters from stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading the meters file {}", file.display()))?
            };
            let meters: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect();
            anyhow::ensure!(!meters.is_empty(), "{} names no meter", file.display());
            let codes = enrolment_store(&settings)
                .await?
                .issue_codes(&meters, lifetime)
                .await
                .with_context(|| format!("issuing enrolment codes for {}", file.display()))?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (meter_id, code) in &codes {
                writeln!(out, "{meter_id} {}", code.code.as_str())?;
            }
            out.flush()?;
            if let Some((_, first)) = codes.first() {
                eprintln!(
                    "{} enrolment codes, valid until {}",
                    codes.len(),
                    first.expires_at.to_rfc3339()
                );
            }
            Ok(())
        }
        Command::EnrolmentCode {
            meter_id, lifetime, ..
        } => {
            let meter_id = meter_id.context("--meter-id or --meters-file is required")?;
            let lifetime = parse_lifetime(&lifetime)?;
            let code = enrolment_store(&settings)
                .await?
                .issue_code(&meter_id, lifetime)
                .await
                .with_context(|| format!("issuing an enrolment code for meter {meter_id}"))?;
            eprintln!(
                "enrolment code for meter {meter_id}, valid until {}",
                code.expires_at.to_rfc3339()
            );
            println!("{}", code.code.as_str());
            Ok(())
        }
        Command::RevokeMeter { meter_id } => {
            let revoked = enrolment_store(&settings)
                .await?
                .revoke(&meter_id)
                .await
                .with_context(|| format!("revoking meter {meter_id}"))?;
            anyhow::ensure!(revoked, "meter {meter_id} has no unrevoked device key");
            eprintln!("meter {meter_id} revoked");
            Ok(())
        }
        Command::Fingerprints => {
            let key = open_signing_key(&settings)?;
            let pem = key.public_key_pem()?;
            println!(
                "jwt-public-key-sha256 {}",
                key_authority::auth::fingerprint::public_key_fingerprint(&pem)?
            );
            for (id, blake3) in key_authority::startup::public_key_fingerprints(&settings).await? {
                println!("public-key-pin {id}={blake3}");
            }
            Ok(())
        }
        Command::InitAudit => {
            telemetry::init_with(&settings.log)?;
            let sequence = key_authority::startup::init_audit(&settings).await?;
            println!(
                "audit log anchored at sequence {sequence} in {}",
                settings.audit_anchor_file().display()
            );
            Ok(())
        }
        Command::PrintSettings => {
            print!("{}", seer_service::to_redacted_toml(&settings)?);
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

fn open_signing_key(settings: &Settings) -> anyhow::Result<Arc<JwtSigningKey>> {
    let (key, _) =
        JwtSigningKey::load_or_generate(&settings.auth.signing_key_file).with_context(|| {
            format!(
                "opening the JWT signing key {}",
                settings.auth.signing_key_file.display()
            )
        })?;
    Ok(Arc::new(key))
}

/// The enrolment registry in the key authority's database (the audit log's).
async fn enrolment_store(settings: &Settings) -> anyhow::Result<EnrolmentStore> {
    let key = open_signing_key(settings)?;
    let log = AuditLog::connect(&settings.audit.database_url, Arc::clone(&key))
        .await
        .with_context(|| format!("opening the audit log at {}", settings.audit.database_url))?;
    Ok(EnrolmentStore::new(Arc::new(log), key))
}

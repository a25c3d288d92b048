//! `seer pki`: a deployment's certificate authority and certificates, for mutual TLS on every
//! hop (`seer_tls`).
//!
//! - `seer pki init --dir D` creates the deployment CA (`D/ca.pem`, `D/ca-key.pem` mode 0600);
//! - `seer pki issue --dir D --meter ID | --utility [NAME] | --auditor NAME | --operator NAME
//!   | --server NAME [--san NAME_OR_IP ...]` issues a certificate (`D/<kind>-<name>.pem`, key
//!   `D/<kind>-<name>-key.pem` mode 0600) and prints where it is and how to configure it;
//! - `seer pki revoke --dir D --cert FILE` adds the certificate to the CA's revocation list
//!   `D/crl.pem`, which servers configured with it (`server.tls.crl_file`) re-read: the
//!   certificate no longer completes a handshake.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use seer_tls::pki::{CA_CERT_FILE, CertificateRequest, DeploymentCa};
use seer_tls::{Party, PartyKind};

/// `seer pki` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create a deployment's certificate authority (ECDSA P-256): DIR/ca.pem, which every
    /// program trusts, and DIR/ca-key.pem (mode 0600; keep it offline once certificates are
    /// issued).
    Init {
        /// The PKI directory (created 0700).
        #[arg(long)]
        dir: PathBuf,
        /// The deployment's name, in the CA's common name.
        #[arg(long, default_value = "seer")]
        name: String,
    },
    /// Issue a certificate signed by the deployment CA of DIR, for exactly one party.
    Issue(IssueArgs),
    /// Revoke a certificate of the deployment CA of DIR: its serial number joins DIR/crl.pem,
    /// signed anew; servers with `server.tls.crl_file` set refuse it in the handshake from
    /// their next connection (a meter's device key is revoked separately, at the key
    /// authority: `key-authority revoke-meter`).
    Revoke {
        /// The PKI directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to revoke (PEM).
        #[arg(long)]
        cert: PathBuf,
    },
}

/// `seer pki issue`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("party").required(true)
    .args(["meter", "utility", "auditor", "operator", "server"])))]
pub struct IssueArgs {
    /// The PKI directory holding the CA.
    #[arg(long)]
    pub dir: PathBuf,
    /// A meter's client certificate; it names the meter id, which must equal its household
    /// token's subject.
    #[arg(long, value_name = "METER_ID")]
    pub meter: Option<String>,
    /// The utility's certificate: it names the utility (client of the key authority) and is
    /// also its server certificate (names from --san).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "utility")]
    pub utility: Option<String>,
    /// An auditor's client certificate (`seer audit`).
    #[arg(long, value_name = "NAME")]
    pub auditor: Option<String>,
    /// An operator's client certificate (admin tokens).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// A server certificate (e.g. `key-authority`), with the names from --san.
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
    /// A DNS name or IP address the server answers on (repeatable; default: localhost,
    /// 127.0.0.1 and ::1). For --server and --utility.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub sans: Vec<String>,
}

impl IssueArgs {
    fn request(&self) -> Result<CertificateRequest> {
        let client = |kind, name: &str| -> Result<CertificateRequest> {
            Ok(CertificateRequest::client(Party::try_new(kind, name)?))
        };
        if !self.sans.is_empty() && self.server.is_none() && self.utility.is_none() {
            anyhow::bail!("--san applies to --server and --utility certificates only");
        }
        Ok(match self {
            Self {
                meter: Some(id), ..
            } => client(PartyKind::Meter, id)?,
            Self {
                auditor: Some(name),
                ..
            } => client(PartyKind::Auditor, name)?,
            Self {
                operator: Some(name),
                ..
            } => client(PartyKind::Operator, name)?,
            Self {
                utility: Some(name),
                ..
            } => CertificateRequest::utility(name, &self.sans)?,
            Self {
                server: Some(name), ..
            } => CertificateRequest::server(name, &self.sans)?,
            _ => anyhow::bail!(
                "name the party: --meter, --utility, --auditor, --operator or --server"
            ),
        })
    }
}

/// Runs a `seer pki` command, writing what it did to `out`.
///
/// # Errors
/// When the CA exists already (init), is missing (issue), a name is invalid or a file cannot
/// be written.
pub fn execute(command: &PkiCommand, out: &mut impl Write) -> Result<()> {
    match command {
        PkiCommand::Init { dir, name } => {
            let ca = DeploymentCa::generate(name)?;
            ca.save(dir)
                .with_context(|| format!("creating the CA in {}", dir.display()))?;
            let crl = ca
                .ensure_revocation_list(dir)
                .context("writing the CA's (empty) revocation list")?;
            writeln!(
                out,
                "deployment CA created: {} (trust root) and {} (mode 0600); revocation list {}",
                dir.join(CA_CERT_FILE).display(),
                dir.join(seer_tls::pki::CA_KEY_FILE).display(),
                crl.display()
            )?;
        }
        PkiCommand::Revoke { dir, cert } => {
            let ca = load_ca(dir)?;
            let pem = std::fs::read_to_string(cert)
                .with_context(|| format!("reading the certificate {}", cert.display()))?;
            let revocation = ca
                .revoke(dir, &pem, cert)
                .with_context(|| format!("revoking {}", cert.display()))?;
            let serial = revocation
                .serial
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            if revocation.added {
                writeln!(
                    out,
                    "certificate {} (serial {serial}) revoked: {} now lists {} certificate(s)",
                    cert.display(),
                    revocation.file.display(),
                    revocation.listed
                )?;
            } else {
                writeln!(
                    out,
                    "certificate {} (serial {serial}) was revoked already ({})",
                    cert.display(),
                    revocation.file.display()
                )?;
            }
        }
        PkiCommand::Issue(args) => {
            let request = args.request()?;
            let ca = load_ca(&args.dir)?;
            // A PKI made before revocation lists existed gets its (empty) list now.
            ca.ensure_revocation_list(&args.dir)
                .context("writing the CA's revocation list")?;
            let written = ca
                .issue(&request)?
                .write(&args.dir, &request.file_stem())
                .context("writing the certificate")?;
            let ca_file = args.dir.join(CA_CERT_FILE);
            writeln!(
                out,
                "certificate for {}: {}",
                request.party(),
                written.cert_file.display()
            )?;
            writeln!(
                out,
                "private key (mode 0600): {}",
                written.key_file.display()
            )?;
            writeln!(out, "a client reads them from:")?;
            for (var, path) in [
                (seer_tls::ENV_CA_FILE, &ca_file),
                (seer_tls::ENV_CERT_FILE, &written.cert_file),
                (seer_tls::ENV_KEY_FILE, &written.key_file),
            ] {
                writeln!(out, "  {var}={}", path.display())?;
            }
            if matches!(
                request.party().kind(),
                PartyKind::Server | PartyKind::Utility
            ) {
                writeln!(out, "a server reads them from its settings:")?;
                writeln!(out, "  [server.tls]")?;
                writeln!(out, "  ca_file = {:?}", ca_file.display().to_string())?;
                writeln!(
                    out,
                    "  cert_file = {:?}",
                    written.cert_file.display().to_string()
                )?;
                writeln!(
                    out,
                    "  key_file = {:?}",
                    written.key_file.display().to_string()
                )?;
                writeln!(
                    out,
                    "  crl_file = {:?}",
                    args.dir.join(seer_tls::crl::CRL_FILE).display().to_string()
                )?;
            }
        }
    }
    Ok(())
}

fn load_ca(dir: &std::path::Path) -> Result<DeploymentCa> {
    DeploymentCa::load(dir).with_context(|| {
        format!(
            "loading the CA of {} (run `seer pki init --dir {}` first)",
            dir.display(),
            dir.display()
        )
    })
}

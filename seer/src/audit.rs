//! `seer audit verify` and `seer audit list`: an auditor's check of the key authority's audit
//! log from public material alone.
//!
//! `verify` asks `seer.v1.Audit.Verify` for the signed head and the entries (paged), then, on
//! this side and with only the key authority's public key: recomputes every entry's hash
//! (the shared definition in [`seer_auth::audit_chain`]), checks that sequences run 1, 2, ...
//! and each entry names its predecessor's hash, that the chain reaches the head with the
//! head's hash, and that the head's signature verifies. With `--anchor FILE` it also checks
//! that the head kept from the previous verification is still in the log with the same hash
//! (a rolled-back or replaced log fails here), and saves the new head there. Last, the key
//! authority's own verdict must be intact (it also checks what auditors cannot see: the
//! release tables against the chain). The first problem is returned as the error.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use seer_auth::audit_chain::{AGGREGATE_KIND, EntryFields, RefusalAggregate, head_signature_valid};
use seer_proto::v1;
use seer_proto::v1::audit_client::AuditClient;
use tonic::transport::Channel;

/// Entries asked for per page.
const PAGE: u32 = 1000;
const ANCHOR_MAGIC: &str = "seer-auditor-anchor v1";

/// Where and how to reach the key authority's audit log.
#[derive(Debug, Clone)]
pub struct AuditTarget {
    /// The key authority's URL (`http://host:port`).
    pub key_authority: String,
    /// An `auditor` or `admin` token.
    pub token: String,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// Entries recomputed and chained.
    pub entries_checked: u64,
    /// The signed head's sequence.
    pub head_sequence: u64,
    /// The signed head's hash, hex.
    pub head_hash: String,
    /// The anchor checked against, when one was saved.
    pub previous_anchor: Option<u64>,
}

/// An auditor's saved head: (sequence, hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditorAnchor {
    /// The entry's sequence.
    pub sequence: u64,
    /// Its hash.
    pub hash: [u8; 32],
}

impl AuditorAnchor {
    /// Reads `path`; `None` when it does not exist.
    ///
    /// # Errors
    /// When it cannot be read or is malformed.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut lines = text.lines();
        ensure!(
            lines.next() == Some(ANCHOR_MAGIC),
            "{} is not an auditor anchor",
            path.display()
        );
        let sequence = lines
            .next()
            .and_then(|l| l.strip_prefix("sequence "))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: no sequence line", path.display()))?;
        let mut hash = [0_u8; 32];
        let hex_hash = lines
            .next()
            .and_then(|l| l.strip_prefix("hash "))
            .with_context(|| format!("{}: no hash line", path.display()))?;
        hex::decode_to_slice(hex_hash, &mut hash)
            .with_context(|| format!("{}: the hash is not 64 hex digits", path.display()))?;
        Ok(Some(Self { sequence, hash }))
    }

    /// Writes it to `path` (replacing it atomically).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = format!(
            "{ANCHOR_MAGIC}\nsequence {}\nhash {}\n",
            self.sequence,
            hex::encode(self.hash)
        );
        let mut temporary = path.as_os_str().to_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, text)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
    }
}

async fn client(target: &AuditTarget) -> Result<AuditClient<Channel>> {
    // `https://`: the auditor's certificate from SEER_TLS_CA_FILE, SEER_TLS_CERT_FILE and
    // SEER_TLS_KEY_FILE (mutual TLS, see `seer_tls::config`).
    let channel = seer_tls::endpoint(&target.key_authority)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", target.key_authority))?;
    Ok(AuditClient::new(channel))
}

/// One page of `Audit.ListEntries` (of [`PAGE`] entries) with the auditor's token.
async fn list_page(
    client: &mut AuditClient<Channel>,
    target: &AuditTarget,
    request: v1::ListAuditEntriesRequest,
) -> Result<v1::ListAuditEntriesResponse> {
    Ok(client
        .list_entries(authorized(
            v1::ListAuditEntriesRequest {
                page_size: PAGE,
                ..request
            },
            &target.token,
        )?)
        .await
        .context("Audit.ListEntries")?
        .into_inner())
}

fn authorized<T>(message: T, token: &str) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?,
    );
    Ok(request)
}

fn hash32(bytes: &[u8], what: &str, sequence: u64) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| anyhow::anyhow!("entry {sequence}: {what} is not 32 bytes"))
}

/// Recomputes one wire entry's hash; `Err` names what is malformed.
pub fn entry_hash(entry: &v1::AuditEntry) -> Result<[u8; 32]> {
    let sequence = entry.sequence;
    let previous = hash32(&entry.previous_hash, "previous_hash", sequence)?;
    let digest = match entry.input_digest.len() {
        0 => None,
        _ => Some(hash32(&entry.input_digest, "input_digest", sequence)?),
    };
    let refusal = match v1::AuditDecision::try_from(entry.decision) {
        Ok(v1::AuditDecision::Granted) => None,
        Ok(v1::AuditDecision::Refused) => Some(entry.reason.as_str()),
        _ => bail!("entry {sequence}: unknown decision {}", entry.decision),
    };
    Ok(EntryFields {
        sequence,
        recorded_at_micros: entry.recorded_at_unix_micros,
        caller: entry
            .caller
            .as_ref()
            .map(|c| (c.subject.as_str(), c.role.as_str())),
        kind: &entry.kind,
        meter_id: entry.meter_id.as_deref(),
        period: entry.period.as_deref(),
        input_digest: digest.as_ref(),
        refusal,
        previous_hash: &previous,
    }
    .hash())
}

/// Checks a `refusals.aggregate` entry: a refusal naming nobody, whose reason is a canonical
/// aggregate with counts that add up and times not after the entry.
fn check_aggregate(entry: &v1::AuditEntry) -> Result<RefusalAggregate> {
    let refused = entry.decision == v1::AuditDecision::Refused as i32;
    RefusalAggregate::check_entry(
        entry.recorded_at_unix_micros,
        entry.caller.is_some(),
        entry.meter_id.is_some() || entry.period.is_some() || !entry.input_digest.is_empty(),
        refused.then_some(entry.reason.as_str()),
    )
    .map_err(|problem| anyhow::anyhow!("entry {}: {problem}", entry.sequence))
}

/// `seer audit verify` (see the [module documentation](self)).
///
/// # Errors
/// The first problem found, in words (or a connection or file error).
pub async fn verify(
    target: &AuditTarget,
    public_key_pem: &str,
    anchor_file: Option<&Path>,
) -> Result<Verified> {
    verify_collecting(target, public_key_pem, anchor_file, &mut Vec::new()).await
}

/// [`verify`], also handing back every entry fetched (in sequence order, up to the first
/// problem) in `entries`: what `seer audit serve` shows beside the verdict.
///
/// # Errors
/// As [`verify`].
pub async fn verify_collecting(
    target: &AuditTarget,
    public_key_pem: &str,
    anchor_file: Option<&Path>,
    entries: &mut Vec<v1::AuditEntry>,
) -> Result<Verified> {
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(public_key_pem)
        .context("parsing the key authority's public key (PEM)")?;
    let saved = anchor_file.map(AuditorAnchor::load).transpose()?.flatten();
    let mut client = client(target).await?;
    let first = client
        .verify(authorized(
            v1::VerifyAuditLogRequest {
                anchor: saved.map(|a| v1::AuditAnchor {
                    sequence: a.sequence,
                    entry_hash: a.hash.to_vec(),
                }),
                after_sequence: 0,
                page_size: PAGE,
            },
            &target.token,
        )?)
        .await
        .context("Audit.Verify")?
        .into_inner();

    // The head, with the public key alone.
    let head = first
        .head
        .clone()
        .context("the key authority sent no head")?;
    let head_hash = hash32(&head.entry_hash, "the head hash", head.sequence)?;
    let key_id = seer_auth::key_id_of(&key);
    ensure!(
        first.head_key_id == key_id,
        "head signature invalid: the head names key {:?}, the public key given is {key_id}",
        first.head_key_id
    );
    ensure!(
        head_signature_valid(&key, head.sequence, &head_hash, &first.head_signature),
        "head signature invalid: the signature does not cover sequence {} with hash {}",
        head.sequence,
        hex::encode(head_hash)
    );

    // Every entry up to the head, recomputed and chained.
    let mut previous = [0_u8; 32];
    let mut last = 0_u64;
    let mut hash_at_anchor = None;
    let mut page = first.entries.clone();
    let mut next = first.next_after_sequence;
    'pages: loop {
        for entry in &page {
            if entry.sequence > head.sequence {
                break 'pages;
            }
            // Shown by `seer audit serve`, the entry a problem is found in included.
            entries.push(entry.clone());
            ensure!(
                entry.sequence == last + 1,
                "sequence gap: expected entry {}, found {}: entries were deleted or renumbered",
                last + 1,
                entry.sequence
            );
            let stored = hash32(&entry.entry_hash, "entry_hash", entry.sequence)?;
            let computed = entry_hash(entry)?;
            ensure!(
                computed == stored,
                "entry {}: stored hash {} but its fields hash to {}: a field was altered",
                entry.sequence,
                hex::encode(stored),
                hex::encode(computed)
            );
            if entry.kind == AGGREGATE_KIND {
                check_aggregate(entry)?;
            }
            ensure!(
                entry.previous_hash == previous,
                "entry {}: previous hash does not name entry {}: the chain was broken",
                entry.sequence,
                last
            );
            if saved.is_some_and(|a| a.sequence == entry.sequence) {
                hash_at_anchor = Some(stored);
            }
            previous = stored;
            last = entry.sequence;
        }
        let Some(after) = next else { break };
        if last >= head.sequence {
            break;
        }
        let more = list_page(
            &mut client,
            target,
            v1::ListAuditEntriesRequest {
                after_sequence: after,
                ..Default::default()
            },
        )
        .await?;
        page = more.entries;
        next = more.next_after_sequence;
    }
    ensure!(
        last == head.sequence,
        "truncated: the log ends at sequence {last}, but the signed head names {}",
        head.sequence
    );
    ensure!(
        head.sequence == 0 || previous == head_hash,
        "head hash mismatch: the signed head records {} for sequence {}, the entry hashes to {}",
        hex::encode(head_hash),
        head.sequence,
        hex::encode(previous)
    );

    // The auditor's own record of the last head: rollback and replacement.
    if let Some(saved) = saved {
        ensure!(
            saved.sequence <= head.sequence,
            "rolled back: the saved anchor records sequence {}, the log's signed head is at {}",
            saved.sequence,
            head.sequence
        );
        let found = if saved.sequence == 0 {
            Some([0; 32])
        } else {
            hash_at_anchor
        };
        ensure!(
            found == Some(saved.hash),
            "anchor mismatch: the saved anchor records hash {} for entry {}, the log has {}: \
             the log was rewritten or replaced",
            hex::encode(saved.hash),
            saved.sequence,
            found.map_or_else(|| "none".to_owned(), hex::encode)
        );
    }

    // What only the key authority can see (e.g. its release tables against the chain).
    if !first.intact {
        let problem = first.problem.unwrap_or_default();
        bail!(
            "the key authority reports damage ({}): {}",
            v1::AuditProblemKind::try_from(problem.kind).map_or("unknown", |k| k.as_str_name()),
            problem.detail
        );
    }

    if let Some(path) = anchor_file {
        AuditorAnchor {
            sequence: head.sequence,
            hash: head_hash,
        }
        .save(path)?;
    }
    Ok(Verified {
        entries_checked: last,
        head_sequence: head.sequence,
        head_hash: hex::encode(head_hash),
        previous_anchor: saved.map(|a| a.sequence),
    })
}

/// `seer audit list`: the entries (optionally of one meter or kind), one JSON object a line.
///
/// # Errors
/// When the key authority cannot be reached or refuses.
pub async fn list(
    target: &AuditTarget,
    meter_id: Option<String>,
    kind: Option<String>,
) -> Result<Vec<serde_json::Value>> {
    let mut client = client(target).await?;
    let mut after = 0;
    let mut out = Vec::new();
    loop {
        let page = list_page(
            &mut client,
            target,
            v1::ListAuditEntriesRequest {
                meter_id: meter_id.clone(),
                kind: kind.clone(),
                after_sequence: after,
                ..Default::default()
            },
        )
        .await?;
        for e in &page.entries {
            out.push(serde_json::json!({
                "sequence": e.sequence,
                "recorded_at": e.recorded_at,
                "caller": e.caller.as_ref().map(|c| format!("{} ({})", c.subject, c.role)),
                "kind": e.kind,
                "meter_id": e.meter_id,
                "period": e.period,
                "input_digest": hex::encode(&e.input_digest),
                "decision": if e.decision == v1::AuditDecision::Granted as i32 {
                    "granted"
                } else {
                    "refused"
                },
                "reason": e.reason,
                "entry_hash": hex::encode(&e.entry_hash),
                // A refusal aggregate's counts, parsed and checked.
                "aggregate": (e.kind == AGGREGATE_KIND)
                    .then(|| check_aggregate(e).ok().and_then(|a| serde_json::to_value(a).ok()))
                    .flatten(),
            }));
        }
        match page.next_after_sequence {
            Some(next) => after = next,
            None => break,
        }
    }
    Ok(out)
}

//! Writes the seed corpora: `seeds DIR [--small]` writes `DIR/TARGET/NAME` for every target.
//! Seeds are real: CSV lines from `data/samples`, tokens and meter certificates signed with the
//! harness's fixture key, each RPC's request as the programs encode it, and ciphertexts and
//! keys generated under the fuzzing parameter set and the billing set. The output is
//! deterministic except for the CKKS objects (fresh keys and encryption randomness), which
//! `--small` leaves out: `fuzz/seeds/` is what `--small` writes, committed.
//!
//! Built with the harness's coverage instrumentation, which only libFuzzer's runtime provides,
//! so it is a libFuzzer binary that does its work in the initialization hook (which sees the
//! command line first) and exits before any fuzzing starts.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use ed25519_dalek::{Signer as _, SigningKey};
use prost::Message as _;
use seer_auth::device::{EnrolmentStatement, MeterCertificateBody, Statement as _};
use seer_ckks::{Ciphertext, CkksContext, Encryptor, KeyGenerator};
use seer_fuzz::auth::{HEADER, authority_key, sign_token};
use seer_fuzz::rpc::{Kind, METER, frame};
use seer_proto::v1;

const DEVICE_SEED: [u8; 32] = *b"seer fuzz device key, fixture 01";

struct Writer {
    dir: PathBuf,
}

impl Writer {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    fn prefixed(&self, target: &str, name: &str, mode: u8, body: &[u8]) -> Result<()> {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(body);
        self.put(target, name, &bytes)
    }
}

libfuzzer_sys::fuzz_target!(init: {
    let code = match write_seeds() {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("seeds: {error:#}");
            1
        }
    };
    std::process::exit(code);
}, |_data: &[u8]| {});

fn write_seeds() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: seeds DIR [--small]")?;
    let small = args.next().is_some_and(|a| a == "--small");
    let writer = Writer { dir: dir.into() };
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    csv(&writer, &samples)?;
    auth(&writer)?;
    rpc(&writer)?;
    if !small {
        ckks(&writer)?;
    }
    Ok(())
}

fn csv(w: &Writer, samples: &Path) -> Result<()> {
    // A few lines of each sample: enough structure, small inputs.
    let head = |name: &str, lines: usize| -> Result<Vec<u8>> {
        let text = fs::read_to_string(samples.join(name)).with_context(|| name.to_owned())?;
        let mut out: String = text.lines().take(lines).collect::<Vec<_>>().join("\n");
        out.push('\n');
        Ok(out.into_bytes())
    };
    w.prefixed(
        "csv_loaders",
        "kwh-15min",
        0x00,
        &head("kwh-15min-sample.csv", 6)?,
    )?;
    w.prefixed(
        "csv_loaders",
        "kwh-hourly-lenient",
        0x0c,
        &head("kwh-hourly-ist-sample.csv", 6)?,
    )?;
    w.prefixed(
        "csv_loaders",
        "kwh-malformed-lenient",
        0x04,
        &head("kwh-malformed.csv", 8)?,
    )?;
    w.prefixed(
        "csv_loaders",
        "uci",
        0x01,
        &head("uci-householdpower-sample.csv", 6)?,
    )?;
    w.prefixed(
        "csv_loaders",
        "uci-original",
        0x05,
        &head("uci-original-layout-sample.txt", 6)?,
    )?;
    w.prefixed(
        "csv_loaders",
        "anomaly",
        0x02,
        &head("kwh-hourly-ist-sample.csv", 6)?,
    )?;
    Ok(())
}

fn claims(role: &str, meter: Option<&str>) -> String {
    let meter = meter.map_or(String::new(), |m| format!(r#","meter_id":"{m}""#));
    format!(
        r#"{{"iss":"seer-key-authority","aud":["seer-utility-server"],"sub":"fuzz","jti":"seed-1","iat":1700000000,"nbf":1700000000,"exp":4102444800,"role":"{role}"{meter}}}"#
    )
}

fn auth(w: &Writer) -> Result<()> {
    let household = claims("household", Some(METER));
    w.prefixed(
        "auth",
        "token",
        0,
        sign_token(HEADER, household.as_bytes()).as_bytes(),
    )?;
    w.prefixed("auth", "claims-household", 1, household.as_bytes())?;
    w.prefixed(
        "auth",
        "claims-utility",
        1,
        claims("utility", None).as_bytes(),
    )?;
    let mut header_and_claims = vec![HEADER.len() as u8];
    header_and_claims.extend_from_slice(HEADER);
    header_and_claims.extend_from_slice(household.as_bytes());
    w.prefixed("auth", "header-claims", 2, &header_and_claims)?;
    let device = SigningKey::from_bytes(&DEVICE_SEED);
    let body = MeterCertificateBody {
        meter_id: METER.into(),
        device_public_key: device.verifying_key().to_bytes(),
        issued_at: 1_700_000_000,
    };
    let mut certificate = body.encode();
    certificate.extend_from_slice(&authority_key().sign(&body.encode()).to_bytes());
    w.prefixed("auth", "certificate", 3, &certificate)?;
    let mut fields = device.verifying_key().to_bytes().to_vec();
    fields.extend_from_slice(&body.issued_at.to_be_bytes());
    fields.extend_from_slice(METER.as_bytes());
    w.prefixed("auth", "certificate-fields", 4, &fields)?;
    let statement = EnrolmentStatement {
        meter_id: METER.into(),
        device_public_key: device.verifying_key().to_bytes(),
    };
    let mut signed = device.verifying_key().to_bytes().to_vec();
    signed.extend_from_slice(&device.sign(&statement.encode()).to_bytes());
    signed.extend_from_slice(METER.as_bytes());
    w.prefixed("auth", "device-signature", 5, &signed)?;
    let pem = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(
        &authority_key().verifying_key(),
        ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
    )
    .context("encoding the fixture public key")?;
    w.prefixed("auth", "public-key-pem", 6, pem.as_bytes())?;
    w.prefixed(
        "auth",
        "audit-entries",
        7,
        b"\x1f\x07\x10\x04fuzz\x09household\x0abill.release\x06M-0001\x072026-11\x2a\x05nope!\x00\
          \x1f\x08\x10\x04fuzz\x09household\x0abill.release\x06M-0001\x072026-11\x2a\x05nope!\x01",
    )?;
    Ok(())
}

fn rpc(w: &Writer) -> Result<()> {
    let put = |kind: Kind, name: &str, body: &[u8]| w.prefixed("rpc", name, kind.selector(), body);
    let batch = v1::UploadBatch {
        meter_id: METER.into(),
        sequence: 1,
        period: "2026-11".into(),
        start: "2026-11-01T00:00:00+05:30".into(),
        end: "2026-11-01T01:00:00+05:30".into(),
        readings: 4,
        billing_lane: b"SEER-lane".to_vec(),
        billing_position: 3,
        billing_group: 0,
        analytics_lane: b"SEER-lane".to_vec(),
        epsilon_spent: 0.5,
        ..Default::default()
    };
    let mut stream = frame(&batch);
    stream.extend(frame(&v1::UploadBatch {
        sequence: 2,
        ..batch.clone()
    }));
    put(Kind::Upload, "upload", &stream)?;
    let header = v1::AnalyticsInputHeader {
        kind: "forecast".into(),
        meter_id: METER.into(),
        input_id: "2026-11-01".into(),
        model_blake3: "ab".repeat(32),
        slot_offset: 0,
        slot_count: 24,
        first_period: "2026-11-01T00:00".into(),
        group: 0,
        inputs: 1,
        ..Default::default()
    };
    let mut stream = frame(&v1::AnalyticsInputChunk {
        part: Some(v1::analytics_input_chunk::Part::Header(header)),
    });
    for (offset, data) in [(0u64, b"SEER".to_vec()), (4, b"-data".to_vec())] {
        stream.extend(frame(&v1::AnalyticsInputChunk {
            part: Some(v1::analytics_input_chunk::Part::Data(
                v1::AnalyticsInputData {
                    index: 0,
                    total_bytes: 9,
                    offset,
                    data,
                    ..Default::default()
                },
            )),
        }));
    }
    put(Kind::UploadInput, "upload-input", &stream)?;
    put(
        Kind::GetCursor,
        "get-cursor",
        &v1::GetCursorRequest {
            meter_id: METER.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(
        Kind::ListBills,
        "list-bills",
        &v1::ListBillsRequest {
            meter_id: METER.into(),
            period: Some("2026-11".into()),
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(
        Kind::GetUsageSummary,
        "usage-summary",
        &v1::GetUsageSummaryRequest {
            meter_id: METER.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(Kind::GetInfo, "get-info", &[])?;
    put(Kind::ListKeySets, "list-key-sets", &[])?;
    put(
        Kind::GetKey,
        "get-key",
        &v1::GetKeyRequest {
            parameter_set_id: seer_ckks::ParameterSet::N8192_L2_SEC128.id(),
            kind: v1::KeyKind::Public as i32,
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(
        Kind::Receipt,
        "receipt",
        &v1::ReceiptRequest {
            meter_id: METER.into(),
            sequence: 1,
            period: "2026-11".into(),
            billing_lane_blake3: vec![7; 32],
            billing_group: 0,
            billing_position: 3,
            closes_period: true,
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(
        Kind::ReleaseBills,
        "release-bills",
        &v1::ReleaseBillsRequest {
            period: "2026-11".into(),
            billing_group: 0,
            inputs: vec![v1::BillInput {
                meter_id: METER.into(),
                sequence: 1,
                billing_lane: b"SEER-lane".to_vec(),
                ..Default::default()
            }],
            result: b"SEER-result".to_vec(),
            cells: b"SEER-cells".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(
        Kind::AnalyticsReceipt,
        "analytics-receipt",
        &v1::AnalyticsReceiptRequest {
            kind: "forecast".into(),
            meter_id: METER.into(),
            input_id: "2026-11-01".into(),
            slot_offset: 0,
            slot_count: 24,
            first_period: "2026-11-01T00:00".into(),
            input_blake3: vec![vec![7; 32]],
            lane: "analytics".into(),
            epsilon: 1.0,
            readings_per_day: 24,
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    let header = v1::AnalyticsReleaseHeader {
        kind: "forecast".into(),
        model_blake3: "ab".repeat(32),
        meters: vec![v1::AnalyticsMeterInput {
            meter_id: METER.into(),
            input_id: "2026-11-01".into(),
            ..Default::default()
        }],
        result_count: 1,
        ..Default::default()
    };
    let chunk = |data: &[u8]| v1::CiphertextChunk {
        meter_index: 0,
        index: 0,
        total_bytes: data.len() as u64,
        offset: 0,
        data: data.to_vec(),
        ..Default::default()
    };
    let mut stream = frame(&v1::AnalyticsReleaseChunk {
        part: Some(v1::analytics_release_chunk::Part::Header(header)),
    });
    stream.extend(frame(&v1::AnalyticsReleaseChunk {
        part: Some(v1::analytics_release_chunk::Part::Input(chunk(
            b"SEER-input",
        ))),
    }));
    stream.extend(frame(&v1::AnalyticsReleaseChunk {
        part: Some(v1::analytics_release_chunk::Part::Result(chunk(
            b"SEER-result",
        ))),
    }));
    put(Kind::AnalyticsRelease, "analytics-release", &stream)?;
    put(
        Kind::ListEntries,
        "list-entries",
        &v1::ListAuditEntriesRequest {
            meter_id: Some(METER.into()),
            kind: Some("bill.release".into()),
            from_unix_micros: Some(1_700_000_000_000_000),
            to_unix_micros: Some(1_800_000_000_000_000),
            after_sequence: 3,
            page_size: 10,
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    let anchor = v1::AuditAnchor {
        sequence: 7,
        entry_hash: vec![9; 32],
        ..Default::default()
    };
    put(
        Kind::Verify,
        "verify",
        &v1::VerifyAuditLogRequest {
            anchor: Some(anchor.clone()),
            after_sequence: 0,
            page_size: 10,
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    let device = SigningKey::from_bytes(&DEVICE_SEED);
    let statement = EnrolmentStatement {
        meter_id: METER.into(),
        device_public_key: device.verifying_key().to_bytes(),
    };
    put(
        Kind::Enrol,
        "enrol",
        &v1::EnrolRequest {
            meter_id: METER.into(),
            code: "0123456789abcdef0123456789abcdef".into(),
            device_public_key: device.verifying_key().to_bytes().to_vec(),
            signature: device.sign(&statement.encode()).to_bytes().to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(
        Kind::RenewToken,
        "renew-token",
        &v1::RenewTokenRequest {
            meter_id: METER.into(),
            issued_at: 1_700_000_000,
            audience: "seer-utility-server".into(),
            signature: vec![1; 64],
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    let entry = v1::AuditEntry {
        sequence: 7,
        recorded_at_unix_micros: 1_700_000_000_000_000,
        recorded_at: "2023-11-14T22:13:20Z".into(),
        caller: Some(v1::AuditCaller {
            subject: "utility".into(),
            role: "utility".into(),
            ..Default::default()
        }),
        kind: "bill.release".into(),
        meter_id: Some(METER.into()),
        period: Some("2026-11".into()),
        input_digest: vec![3; 32],
        decision: v1::AuditDecision::Refused as i32,
        reason: "already released".into(),
        previous_hash: vec![5; 32],
        entry_hash: vec![9; 32],
        ..Default::default()
    };
    let head = authority_key()
        .sign(&seer_auth::audit_chain::head_message(7, &[9; 32]))
        .to_bytes();
    put(
        Kind::VerifyResponse,
        "verify-response",
        &v1::VerifyAuditLogResponse {
            intact: true,
            entries_checked: 7,
            head: Some(anchor),
            head_signature: head.to_vec(),
            entries: vec![entry.clone()],
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    put(
        Kind::ListEntriesResponse,
        "list-entries-response",
        &v1::ListAuditEntriesResponse {
            entries: vec![entry],
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    let body = MeterCertificateBody {
        meter_id: METER.into(),
        device_public_key: device.verifying_key().to_bytes(),
        issued_at: 1_700_000_000,
    };
    let mut certificate = body.encode();
    certificate.extend_from_slice(&authority_key().sign(&body.encode()).to_bytes());
    put(
        Kind::EnrolResponse,
        "enrol-response",
        &v1::EnrolResponse {
            meter_certificate: certificate,
            ..Default::default()
        }
        .encode_to_vec(),
    )?;
    let mut streams = frame(&v1::KeyChunk {
        total_bytes: 8,
        offset: 0,
        data: b"SEER-key".to_vec(),
        ..Default::default()
    });
    streams.extend(frame(&v1::UploadAck {
        meter_id: METER.into(),
        sequence: 1,
        ..Default::default()
    }));
    put(Kind::ClientStreams, "client-streams", &streams)?;
    put(
        Kind::GroupForecast,
        "group-forecast",
        &v1::GroupForecastRequest {
            group: 3,
            day: "2024-01-30".into(),
            model_blake3: "ab".repeat(32),
        }
        .encode_to_vec(),
    )?;
    Ok(())
}

fn ckks(w: &Writer) -> Result<()> {
    for (ctx, base) in [
        (seer_fuzz::ckks::small_context(), 0x00u8),
        (seer_fuzz::ckks::billing_context(), 0x10),
    ] {
        let keygen = KeyGenerator::new(ctx)?;
        let public = keygen.public_key()?;
        let encryptor = Encryptor::new(ctx, &public)?;
        let ct = encryptor.encrypt_values(&[1.0, 2.0, 3.0])?;
        let name = |what: &str| format!("{what}-{}", ctx.parameter_set_id());
        for (what, mode, bytes) in [
            ("ciphertext-sparse", 0u8, sparse_ciphertext(ctx, &ct)?),
            ("ciphertext", 0, ct.to_bytes(ctx)?),
            ("ciphertext-plain", 0, ct.to_bytes_uncompressed(ctx)?),
            ("public-key", 1, public.to_bytes(ctx)),
            ("relin-keys", 2, keygen.relin_keys()?.to_bytes(ctx)),
            (
                "galois-keys",
                3,
                keygen.galois_keys(&[1, -1])?.to_bytes(ctx),
            ),
            (
                "secret-key",
                4,
                keygen.secret_key()?.to_bytes(ctx)?.to_vec(),
            ),
        ] {
            w.prefixed("ckks_frames", &name(what), base | mode, &bytes)?;
            // The same frame in repair mode (lengths and checksum rewritten after mutation).
            w.prefixed(
                "ckks_frames",
                &name(&format!("{what}-repair")),
                base | mode | 0x08,
                &bytes,
            )?;
        }
    }
    Ok(())
}

/// A valid ciphertext whose coefficients are all zero but one (so it is not transparent): its
/// zstd-compressed frame is a few hundred bytes, small enough for the fuzzer to mutate whole,
/// so that mutations of a loadable object (and of SEAL's zstd stream) are explored.
fn sparse_ciphertext(ctx: &CkksContext, ct: &Ciphertext) -> Result<Vec<u8>> {
    let mut frame = ct.to_bytes_uncompressed(ctx)?;
    let n = ctx.parameter_set().degree();
    let primes = ct.level().0 as usize + 1;
    // SEAL writes the coefficients last: 2 polynomials × primes × n words, before the checksum.
    let data = 2 * primes * n * 8;
    let end = frame.len() - 32;
    let start = end
        .checked_sub(data)
        .context("ciphertext frame shorter than its data")?;
    frame[start..end].fill(0);
    frame[start + primes * n * 8] = 1;
    let frame = seer_fuzz::ckks::repair_frame(&frame).into_owned();
    let sparse = Ciphertext::from_bytes(ctx, &frame).context("the sparse ciphertext loads")?;
    let bytes = sparse.to_bytes(ctx)?;
    anyhow::ensure!(
        bytes.len() < 4096,
        "sparse ciphertext of {} bytes",
        bytes.len()
    );
    Ok(bytes)
}

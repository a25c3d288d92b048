//! The `rpc` target's body: every request message of every `seer.v1` service decoded from
//! protobuf, then run through the validation its handler applies before storage (the
//! handlers' own functions, exported by the programs' `fuzzing` feature); the streaming RPCs
//! are decoded from a gRPC-framed request body by tonic's own `Streaming` decoder, as the
//! servers receive them. The responses a client parses further (audit entries, meter
//! certificates) are covered too.
//!
//! Input: one selector byte (the message; bit 0x80 makes the caller a utility instead of the
//! household `M-0001`), then the protobuf message or, for streams, the gRPC body.

use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;
use seer_auth::device::{DevicePublicKey, EnrolmentStatement, MeterCertificate, Statement as _};
use seer_ckks::{Ciphertext, ParameterSet};
use seer_proto::MAX_MESSAGE_SIZE;
use seer_proto::v1;
use tonic::Request;
use tonic::codec::{Codec as _, Streaming};
use tonic_prost::ProstCodec;
use utility_server::auth::{IngestPolicy, MeterAction, MeterAuthorization as _, Principal};
use utility_server::batch::{Batch, MeterId, Period};

/// Homes per billing group in the default layout (BESCOM slabs at n = 8192).
pub const BILLING_CAPACITY: usize = 1024;
/// Slots of the deep analytics parameter set (`N32768_L19_SEC128`).
pub const DEEP_SLOTS: usize = 32_768 / 2;
/// Per-ciphertext limit of streamed release inputs used here (the programs use the deep
/// set's frame limit; a smaller one keeps inputs cheap without changing the checks).
pub const RELEASE_LIMIT: usize = 1 << 20;
/// The meter the household caller is bound to.
pub const METER: &str = "M-0001";

/// The message kinds, in selector order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Ingest.Upload` (stream of `UploadBatch`).
    Upload,
    /// `Ingest.GetCursor`.
    GetCursor,
    /// `AnalyticsIngest.UploadInput` (stream of `AnalyticsInputChunk`).
    UploadInput,
    /// `Bills.ListBills`.
    ListBills,
    /// `Bills.GetUsageSummary`.
    GetUsageSummary,
    /// `Node.GetInfo`.
    GetInfo,
    /// `Keys.ListKeySets`.
    ListKeySets,
    /// `Keys.GetKey`.
    GetKey,
    /// `Receipts.Record`.
    Receipt,
    /// `Release.ReleaseBills`.
    ReleaseBills,
    /// `AnalyticsReceipts.Record`.
    AnalyticsReceipt,
    /// `Analytics.Release` (stream of `AnalyticsReleaseChunk`).
    AnalyticsRelease,
    /// `Audit.ListEntries`.
    ListEntries,
    /// `Audit.Verify`.
    Verify,
    /// `Enrolment.Enrol`.
    Enrol,
    /// `Enrolment.RenewToken`.
    RenewToken,
    /// The auditor's reading of `Audit.Verify`'s response (`seer audit verify`).
    VerifyResponse,
    /// The auditor's reading of `Audit.ListEntries`' response (`seer audit list`).
    ListEntriesResponse,
    /// The meter's reading of `Enrolment.Enrol`'s response.
    EnrolResponse,
    /// The meter's reading of `Keys.GetKey`'s chunks and `Ingest.Upload`'s acks.
    ClientStreams,
    /// `Analytics.ReleaseGroupForecast`.
    GroupForecast,
}

impl Kind {
    /// Every kind, in selector order.
    pub const ALL: [Kind; 21] = [
        Kind::Upload,
        Kind::GetCursor,
        Kind::UploadInput,
        Kind::ListBills,
        Kind::GetUsageSummary,
        Kind::GetInfo,
        Kind::ListKeySets,
        Kind::GetKey,
        Kind::Receipt,
        Kind::ReleaseBills,
        Kind::AnalyticsReceipt,
        Kind::AnalyticsRelease,
        Kind::ListEntries,
        Kind::Verify,
        Kind::Enrol,
        Kind::RenewToken,
        Kind::VerifyResponse,
        Kind::ListEntriesResponse,
        Kind::EnrolResponse,
        Kind::ClientStreams,
        Kind::GroupForecast,
    ];

    /// The selector byte of this kind (household caller).
    #[must_use]
    pub fn selector(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }
}

/// The gRPC framing of one message (uncompressed).
pub fn frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// A server-side request stream of `T` over `body`, as tonic builds it for a streaming RPC.
fn streaming<T: Message + Default + Send + 'static>(body: &[u8]) -> Streaming<T> {
    let mut codec = ProstCodec::<T, T>::default();
    Streaming::new_request(
        codec.decoder(),
        http_body_util::Full::new(Bytes::copy_from_slice(body)),
        None,
        Some(MAX_MESSAGE_SIZE),
    )
}

/// Runs the message chosen by `data[0]` through its decode-and-validate path.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Some(&kind) = Kind::ALL.get(usize::from(selector & 0x7f) % Kind::ALL.len()) else {
        return;
    };
    let principal = if selector & 0x80 != 0 {
        Principal::Utility
    } else {
        Principal::Household {
            meter_id: MeterId::try_new(METER).expect("a valid meter id"),
        }
    };
    match kind {
        Kind::Upload => upload(body, &principal),
        Kind::UploadInput => upload_input(body, &principal),
        Kind::AnalyticsRelease => analytics_release(body),
        Kind::ClientStreams => client_streams(body),
        _ => unary(kind, body, &principal),
    }
}

fn upload(body: &[u8], principal: &Principal) {
    let mut stream = streaming::<v1::UploadBatch>(body);
    runtime().block_on(async {
        // The handler answers each batch in turn and stops at the first error.
        while let Ok(Some(wire)) = stream.message().await {
            let meter = wire.meter_id.clone();
            let Ok(batch) = Batch::try_from_wire(wire, BILLING_CAPACITY) else {
                break;
            };
            assert_eq!(batch.meter_id().as_str(), meter);
            if IngestPolicy
                .authorize(Some(principal), batch.meter_id(), MeterAction::Upload)
                .is_err()
            {
                break;
            }
            let _ = Ciphertext::from_bytes(crate::ckks::billing_context(), batch.billing_lane());
        }
    });
}

fn upload_input(body: &[u8], principal: &Principal) {
    let mut stream = streaming::<v1::AnalyticsInputChunk>(body);
    runtime().block_on(async {
        let Ok(Some(first)) = stream.message().await else {
            return;
        };
        let Some(v1::analytics_input_chunk::Part::Header(header)) = first.part else {
            return;
        };
        let Ok(checked) = utility_server::analytics_ingest::AnalyticsIngestService::check_header(
            Some(principal),
            &header,
            DEEP_SLOTS,
        ) else {
            return;
        };
        assert_eq!(checked.meter_id, header.meter_id);
        let count = header.inputs as usize;
        if let Ok(ciphertexts) =
            utility_server::fuzzing::analytics_input_chunks(&mut stream, count).await
        {
            assert_eq!(ciphertexts.len(), count);
        }
    });
}

fn analytics_release(body: &[u8]) {
    let mut stream = streaming::<v1::AnalyticsReleaseChunk>(body);
    runtime().block_on(async {
        let Ok(Some(first)) = stream.message().await else {
            return;
        };
        let Some(v1::analytics_release_chunk::Part::Header(header)) = first.part else {
            return;
        };
        let _ = key_authority::fuzzing::analytics_release(header, &mut stream, RELEASE_LIMIT).await;
    });
}

fn client_streams(body: &[u8]) {
    // The meter assembles key chunks and reads upload acks from response streams.
    let (left, right) = body.split_at(body.len() / 2);
    runtime().block_on(async {
        let mut chunks = streaming::<v1::KeyChunk>(left);
        while let Ok(Some(_chunk)) = chunks.message().await {}
        let mut acks = streaming::<v1::UploadAck>(right);
        while let Ok(Some(_ack)) = acks.message().await {}
    });
}

fn unary(kind: Kind, body: &[u8], principal: &Principal) {
    match kind {
        Kind::GetCursor => {
            if let Ok(request) = v1::GetCursorRequest::decode(body) {
                if let Ok(meter) = MeterId::try_new(request.meter_id.as_str()) {
                    let _ =
                        IngestPolicy.authorize(Some(principal), &meter, MeterAction::ReadCursor);
                }
            }
        }
        Kind::ListBills => {
            if let Ok(message) = v1::ListBillsRequest::decode(body) {
                let mut request = Request::new(message);
                request.extensions_mut().insert(principal.clone());
                let meter_id = request.get_ref().meter_id.clone();
                if utility_server::fuzzing::bills_meter(&request, &meter_id).is_ok() {
                    if let Some(period) = &request.get_ref().period {
                        if let Ok(parsed) = period.parse::<Period>() {
                            assert_eq!(&parsed.to_string(), period);
                        }
                    }
                }
            }
        }
        Kind::GetUsageSummary => {
            if let Ok(message) = v1::GetUsageSummaryRequest::decode(body) {
                let mut request = Request::new(message);
                request.extensions_mut().insert(principal.clone());
                let meter_id = request.get_ref().meter_id.clone();
                let _ = utility_server::fuzzing::bills_meter(&request, &meter_id);
            }
        }
        Kind::GetInfo => {
            let _ = v1::GetInfoRequest::decode(body);
        }
        Kind::ListKeySets => {
            let _ = v1::ListKeySetsRequest::decode(body);
        }
        Kind::GetKey => {
            if let Ok(request) = v1::GetKeyRequest::decode(body) {
                let _ = ParameterSet::try_from_id(&request.parameter_set_id);
                let _ = v1::KeyKind::try_from(request.kind);
            }
        }
        Kind::Receipt => {
            if let Ok(request) = v1::ReceiptRequest::decode(body) {
                let wire = request.clone();
                if let Ok(receipt) = key_authority::fuzzing::receipt(request, BILLING_CAPACITY) {
                    assert_eq!(receipt.meter_id, wire.meter_id);
                    assert_eq!(receipt.sequence, wire.sequence);
                    assert!((receipt.billing_position as usize) < BILLING_CAPACITY);
                }
            }
        }
        Kind::ReleaseBills => {
            if let Ok(request) = v1::ReleaseBillsRequest::decode(body) {
                let inputs = request.inputs.len();
                let bill = key_authority::fuzzing::bill_request(request);
                assert_eq!(bill.inputs.len(), inputs);
                let _ = bill.period.parse::<key_authority::release::Period>();
            }
        }
        Kind::AnalyticsReceipt => {
            if let Ok(request) = v1::AnalyticsReceiptRequest::decode(body) {
                let _ = key_authority::fuzzing::analytics_receipt(request, DEEP_SLOTS);
            }
        }
        Kind::GroupForecast => {
            if let Ok(request) = v1::GroupForecastRequest::decode(body) {
                if let Ok(query) = key_authority::fuzzing::group_forecast_request(&request) {
                    assert_eq!(query.group, request.group);
                    assert_eq!(query.day.to_string(), request.day);
                    let _ = query.scope();
                }
            }
        }
        Kind::ListEntries => {
            if let Ok(request) = v1::ListAuditEntriesRequest::decode(body) {
                let _ = key_authority::fuzzing::audit_list_query(request);
            }
        }
        Kind::Verify => {
            if let Ok(request) = v1::VerifyAuditLogRequest::decode(body) {
                if let Some(anchor) = &request.anchor {
                    let _ = key_authority::fuzzing::audit_anchor(anchor);
                }
            }
        }
        Kind::Enrol => {
            if let Ok(request) = v1::EnrolRequest::decode(body) {
                // The handler's checks before the database, in its order.
                if seer_auth::validate_meter_id(&request.meter_id).is_ok() {
                    if let Ok(device) = DevicePublicKey::try_from_bytes(&request.device_public_key)
                    {
                        let statement = EnrolmentStatement {
                            meter_id: request.meter_id.clone(),
                            device_public_key: device.to_bytes(),
                        };
                        let _ = statement.encode();
                        let _ = device.verify(&statement, &request.signature);
                    }
                }
            }
        }
        Kind::RenewToken => {
            if let Ok(request) = v1::RenewTokenRequest::decode(body) {
                let _ = seer_auth::validate_meter_id(&request.meter_id);
            }
        }
        Kind::VerifyResponse => {
            if let Ok(response) = v1::VerifyAuditLogResponse::decode(body) {
                for entry in &response.entries {
                    let _ = seer::audit::entry_hash(entry);
                }
                if let Some(head) = &response.head {
                    if let Ok(hash) = <[u8; 32]>::try_from(head.entry_hash.as_slice()) {
                        let _ = seer_auth::audit_chain::head_signature_valid(
                            &crate::auth::authority_key().verifying_key(),
                            head.sequence,
                            &hash,
                            &response.head_signature,
                        );
                    }
                }
            }
        }
        Kind::ListEntriesResponse => {
            if let Ok(response) = v1::ListAuditEntriesResponse::decode(body) {
                for entry in &response.entries {
                    let _ = seer::audit::entry_hash(entry);
                }
            }
        }
        Kind::EnrolResponse => {
            if let Ok(response) = v1::EnrolResponse::decode(body) {
                let _ = MeterCertificate::try_from_bytes(&response.meter_certificate);
            }
        }
        Kind::Upload | Kind::UploadInput | Kind::AnalyticsRelease | Kind::ClientStreams => {}
    }
}

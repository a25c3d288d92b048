//! `seer.v1.AnalyticsIngest`: meters upload the inputs of analytics computations, which the
//! utility stores until a job evaluates them: kind `forecast` (the hourly series as one
//! N32768 ciphertext, [`crate::forecast::run_pending`]) and kind `daily` (one meter-day's
//! block as one small `N4096_L1` ciphertext, [`crate::daily::run_pending`]). Kind `anomaly`
//! (24 hour planes per home-day) has no streamed job and is refused here; `seer anomaly`
//! releases it.
//!
//! One call carries one meter's inputs: a header, then each ciphertext in chunks. Checked in
//! order, each failure ending the call with a status that names the problem and storing
//! nothing: the caller may upload for the meter (a household token of that meter:
//! [`IngestPolicy`]); the header is well formed (known kind, the kind's number of inputs, a
//! model digest, a block inside the kind's parameter set's slots — for `daily` exactly one
//! whole block of [`seer_daily::layout::BLOCK`] slots — and a first period of the kind's
//! form); the chunks arrive in order with contiguous offsets, each ciphertext at most the
//! kind's limit ([`MAX_INPUT_BYTES`] for the deep sets, the largest valid `N4096_L1`
//! ciphertext for `daily`, so an oversized daily upload is refused at its first chunk);
//! every ciphertext parses as a framed, checksummed ciphertext of the kind's parameter set
//! with the levels its circuit needs (on the blocking pool). Then the store decides: stored,
//! an identical resend (acknowledged as a duplicate) or a conflict (`ALREADY_EXISTS`).

use std::sync::Arc;

use seer_ckks::{Ciphertext, CkksContext};
use seer_proto::v1::analytics_ingest_server::AnalyticsIngest;
use seer_proto::v1::analytics_input_chunk::Part;
use seer_proto::v1::{AnalyticsInputAck, AnalyticsInputChunk, AnalyticsInputHeader};
use tokio::sync::OnceCell;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::auth::{self, AuthzError, IngestPolicy, MeterAction, MeterAuthorization};
use crate::batch::MeterId;
use crate::signatures::{MeterSignatures, SignatureError};
use crate::store::{AnalyticsInput, InputHeader, InputOutcome, Store, StoreError};

/// Largest input ciphertext accepted (a fresh N32768_L19 ciphertext takes about 10 MB).
pub const MAX_INPUT_BYTES: u64 = 32 << 20;

/// Longest input id accepted.
pub const MAX_INPUT_ID_LEN: usize = 128;

/// The input ciphertexts per meter of each kind the utility's jobs evaluate from uploads.
#[must_use]
pub fn inputs_of(kind: &str) -> Option<usize> {
    InputKind::try_from_name(kind).map(InputKind::inputs)
}

/// A kind of upload the utility's jobs evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputKind {
    /// `forecast`: the hourly series, one `N32768_L19` ciphertext, one slot per hour.
    Forecast,
    /// `daily`: one meter-day's block, one `N4096_L1` ciphertext ([`seer_daily`]).
    Daily,
}

impl InputKind {
    /// The kind named `name` on the wire, if it is uploaded here.
    #[must_use]
    pub fn try_from_name(name: &str) -> Option<Self> {
        match name {
            "forecast" => Some(Self::Forecast),
            "daily" => Some(Self::Daily),
            _ => None,
        }
    }

    /// Its name on the wire and in the store.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Forecast => "forecast",
            Self::Daily => "daily",
        }
    }

    /// Input ciphertexts per upload.
    #[must_use]
    pub fn inputs(self) -> usize {
        1
    }

    /// The parameter set its ciphertexts must be made under.
    #[must_use]
    pub fn parameter_set(self) -> seer_ckks::ParameterSet {
        match self {
            Self::Forecast => seer_forecast::circuit::PARAMETER_SET,
            Self::Daily => seer_daily::PARAMETERS,
        }
    }

    /// Levels an input must have left for the kind's circuit (0: not checked at ingest).
    #[must_use]
    pub fn levels_needed(self) -> u32 {
        match self {
            Self::Forecast => 0,
            Self::Daily => seer_daily::circuit::DEPTH,
        }
    }
}

/// The input id of a meter's `daily` upload for `day`: `daily-YYYY-MM-DD` (one upload per
/// meter and day, so the store's once-per-(kind, meter, input id) is once per day).
#[must_use]
pub fn daily_input_id(day: chrono::NaiveDate) -> String {
    format!("daily-{}", day.format("%Y-%m-%d"))
}

/// Why an upload was refused; converted to a [`Status`] by `From`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Not authenticated, or not entitled to upload for the meter.
    #[error(transparent)]
    Authorization(#[from] AuthzError),
    /// The header, the chunks or a ciphertext is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Different inputs are stored under the same (kind, meter, input id).
    #[error("meter {meter_id} already stored different {kind} inputs under the id {input_id:?}")]
    Conflict {
        /// The kind.
        kind: String,
        /// The meter.
        meter_id: String,
        /// The input id.
        input_id: String,
    },
    /// The meter's certificate or signature does not verify over the received inputs.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The database failed (logged; the client learns only that the store is unavailable).
    #[error("the store is unavailable")]
    Store(#[source] StoreError),
    /// A validation task failed (logged, not sent).
    #[error("internal error")]
    Internal(String),
}

impl From<InputError> for Status {
    fn from(error: InputError) -> Self {
        match &error {
            InputError::Authorization(AuthzError::Unauthenticated) => {
                Status::unauthenticated(error.to_string())
            }
            InputError::Authorization(_) => Status::permission_denied(error.to_string()),
            InputError::Invalid(_) => Status::invalid_argument(error.to_string()),
            InputError::Conflict { .. } => Status::already_exists(error.to_string()),
            InputError::Signature(_) => Status::permission_denied(error.to_string()),
            InputError::Store(source) => {
                tracing::error!(error = %source, "analytics input store failed");
                Status::unavailable(error.to_string())
            }
            InputError::Internal(why) => {
                tracing::error!(error = %why, "analytics input validation failed");
                Status::internal(error.to_string())
            }
        }
    }
}

/// The `seer.v1.AnalyticsIngest` service.
#[derive(Clone)]
pub struct AnalyticsIngestService {
    store: Store,
    /// Checks meters' signatures when the key authority's public key is known.
    signatures: Option<Arc<MeterSignatures>>,
    /// The deep parameter set's context, built on first use (tens of milliseconds of NTT
    /// tables that most utility servers never need).
    deep: Arc<OnceCell<CkksContext>>,
    /// The daily lane's `N4096_L1` context, built on first use.
    daily: Arc<OnceCell<CkksContext>>,
}

impl std::fmt::Debug for AnalyticsIngestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsIngestService")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn invalid(reason: impl Into<String>) -> InputError {
    InputError::Invalid(reason.into())
}

impl AnalyticsIngestService {
    /// The service over `store`.
    #[must_use]
    pub fn new(store: Store) -> Self {
        Self {
            store,
            signatures: None,
            deep: Arc::new(OnceCell::new()),
            daily: Arc::new(OnceCell::new()),
        }
    }

    /// Requires every upload's header to carry the meter's certificate and signature over
    /// the received inputs, checked with `signatures` (see [`crate::signatures`]).
    #[must_use]
    pub fn with_signatures(mut self, signatures: Option<Arc<MeterSignatures>>) -> Self {
        self.signatures = signatures;
        self
    }

    async fn context(&self, kind: InputKind) -> Result<&CkksContext, InputError> {
        let cell = match kind {
            InputKind::Forecast => &self.deep,
            InputKind::Daily => &self.daily,
        };
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || CkksContext::new(kind.parameter_set()))
                .await
                .map_err(|e| InputError::Internal(e.to_string()))?
                .map_err(|e| InputError::Internal(e.to_string()))
        })
        .await
    }

    /// Checks the header of an upload by `principal` against `slots`, the slots of the kind's
    /// parameter set.
    ///
    /// # Errors
    /// [`InputError::Authorization`], [`InputError::Invalid`].
    pub fn check_header(
        principal: Option<&auth::Principal>,
        header: &AnalyticsInputHeader,
        slots: usize,
    ) -> Result<InputHeader, InputError> {
        let meter_id = MeterId::try_new(header.meter_id.clone())
            .map_err(|e| invalid(format!("meter id: {e}")))?;
        IngestPolicy.authorize(principal, &meter_id, MeterAction::Upload)?;
        let kind = InputKind::try_from_name(&header.kind).ok_or_else(|| {
            invalid(format!(
                "kind {:?} is not uploaded here: expected forecast or daily",
                header.kind.chars().take(32).collect::<String>()
            ))
        })?;
        let expected = kind.inputs();
        if header.inputs as usize != expected {
            return Err(invalid(format!(
                "a {} upload carries {expected} ciphertexts, not {}",
                header.kind, header.inputs
            )));
        }
        let id = &header.input_id;
        if id.is_empty() || id.len() > MAX_INPUT_ID_LEN || !id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(invalid(format!(
                "the input id must be 1 to {MAX_INPUT_ID_LEN} printable ASCII characters"
            )));
        }
        if header.model_blake3.len() != 64
            || !header
                .model_blake3
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(invalid(
                "the model digest must be 64 lowercase hex digits (BLAKE3 of the model file)",
            ));
        }
        let end = u64::from(header.slot_offset) + u64::from(header.slot_count);
        if header.slot_count == 0 || end > slots as u64 {
            return Err(invalid(format!(
                "the block {}..{end} is empty or exceeds the {slots} slots",
                header.slot_offset
            )));
        }
        if kind == InputKind::Daily {
            Self::check_daily(header)?;
        } else {
            Self::check_hourly(header)?;
        }
        Ok(InputHeader {
            kind: kind.name().to_owned(),
            meter_id: meter_id.as_str().to_owned(),
            input_id: id.clone(),
            model_blake3: header.model_blake3.clone(),
            slot_offset: header.slot_offset,
            slot_count: header.slot_count,
            first_period: header.first_period.clone(),
            group: header.group,
        })
    }

    /// `daily`: one whole block of the `N4096_L1` ciphertext, a day, and the day's input id.
    fn check_daily(header: &AnalyticsInputHeader) -> Result<(), InputError> {
        use seer_daily::layout::{BLOCK, BLOCKS_PER_CIPHERTEXT};
        if header.slot_count as usize != BLOCK
            || !(header.slot_offset as usize).is_multiple_of(BLOCK)
            || header.slot_offset as usize >= BLOCK * BLOCKS_PER_CIPHERTEXT
        {
            return Err(invalid(format!(
                "a daily upload fills one block: slot_count {BLOCK} at an offset that is a                  multiple of {BLOCK} below {}, not {} slots at {}",
                BLOCK * BLOCKS_PER_CIPHERTEXT,
                header.slot_count,
                header.slot_offset
            )));
        }
        let day = chrono::NaiveDate::parse_from_str(&header.first_period, "%Y-%m-%d")
            .ok()
            .filter(|d| d.format("%Y-%m-%d").to_string() == header.first_period)
            .ok_or_else(|| {
                invalid(format!(
                    "the first period {:?} of a daily upload is not a day YYYY-MM-DD",
                    header.first_period.chars().take(32).collect::<String>(),
                ))
            })?;
        if header.input_id != daily_input_id(day) {
            return Err(invalid(format!(
                "the input id of a daily upload for {day} is {:?}",
                daily_input_id(day)
            )));
        }
        Ok(())
    }

    /// One slot per hour: the first period is an hour.
    fn check_hourly(header: &AnalyticsInputHeader) -> Result<(), InputError> {
        let well_formed =
            chrono::NaiveDateTime::parse_from_str(&header.first_period, "%Y-%m-%dT%H:%M")
                .is_ok_and(|t| t.format("%Y-%m-%dT%H:00").to_string() == header.first_period);
        if !well_formed {
            return Err(invalid(format!(
                "the first period {:?} is not an hour YYYY-MM-DDTHH:00",
                header.first_period.chars().take(32).collect::<String>(),
            )));
        }
        Ok(())
    }

    /// Receives, checks and stores one upload.
    ///
    /// # Errors
    /// See [`InputError`].
    pub async fn receive(
        &self,
        principal: Option<&auth::Principal>,
        mut chunks: impl tokio_stream::Stream<Item = Result<AnalyticsInputChunk, Status>> + Unpin,
    ) -> Result<AnalyticsInputAck, Status> {
        if principal.is_none() {
            return Err(InputError::from(AuthzError::Unauthenticated).into());
        }
        let first = chunks
            .next()
            .await
            .ok_or_else(|| invalid("the upload is empty"))??;
        let Some(Part::Header(wire)) = first.part else {
            return Err(invalid("the first message of an upload must be its header").into());
        };
        // An unknown kind is refused by `check_header`; its context is the deep one until then
        // (never built: the check fails first).
        let kind = InputKind::try_from_name(&wire.kind);
        let (ctx, max_bytes) = match kind {
            Some(kind) => {
                let ctx = self.context(kind).await?.clone();
                let max = match kind {
                    InputKind::Daily => Ciphertext::max_serialized_len(&ctx) as u64,
                    InputKind::Forecast => MAX_INPUT_BYTES,
                };
                (Some(ctx), max)
            }
            None => (None, MAX_INPUT_BYTES),
        };
        let slots = ctx.as_ref().map_or(0, CkksContext::slots);
        let header = Self::check_header(principal, &wire, slots)?;
        let (Some(ctx), Some(kind)) = (ctx, kind) else {
            return Err(InputError::Internal("no context for a checked kind".into()).into());
        };
        let span = tracing::info_span!(
            "analytics_ingest.upload",
            kind = %header.kind,
            meter_id = %header.meter_id,
            input_id = %header.input_id
        );
        let count = wire.inputs as usize;
        let ciphertexts = receive_ciphertexts_limited(&mut chunks, count, max_bytes).await?;
        // The meter's signature over exactly what arrived, before anything is parsed or
        // stored: a relabelled lane or ε, or an altered input, is refused here.
        if let Some(signatures) = &self.signatures {
            let digests = ciphertexts
                .iter()
                .map(|ct| *blake3::hash(ct).as_bytes())
                .collect();
            signatures
                .check_input(&wire, digests)
                .map_err(InputError::from)?;
        }
        let input = AnalyticsInput {
            header,
            ciphertexts,
        };
        let input = tokio::task::spawn_blocking(move || {
            for (k, bytes) in input.ciphertexts.iter().enumerate() {
                let ct = Ciphertext::from_bytes(&ctx, bytes).map_err(|e| {
                    invalid(format!(
                        "ciphertext {k} is not a ciphertext of {}: {e}",
                        ctx.parameter_set_id()
                    ))
                })?;
                let needed = kind.levels_needed();
                if ct.level().0 < needed {
                    return Err(invalid(format!(
                        "ciphertext {k} has {} levels left; the {} circuit needs {needed}",
                        ct.level().0,
                        kind.name()
                    )));
                }
            }
            Ok::<_, InputError>(input)
        })
        .instrument(span.clone())
        .await
        .map_err(|e| InputError::Internal(e.to_string()))??;
        let bytes = input.ciphertexts.iter().map(|c| c.len() as u64).sum();
        let outcome = self
            .store
            .insert_analytics_input_signed(&input, &wire.signature, &wire.meter_certificate)
            .await
            .map_err(InputError::Store)?;
        let h = input.header;
        let duplicate = match outcome {
            InputOutcome::Stored => false,
            InputOutcome::Duplicate => true,
            InputOutcome::Conflict => {
                return Err(InputError::Conflict {
                    kind: h.kind,
                    meter_id: h.meter_id,
                    input_id: h.input_id,
                }
                .into());
            }
        };
        span.in_scope(|| tracing::info!(bytes, duplicate, "analytics input stored"));
        Ok(AnalyticsInputAck {
            meter_id: h.meter_id,
            input_id: h.input_id,
            duplicate,
            bytes,
        })
    }
}

/// Reassembles `count` ciphertexts from the data chunks that follow a header: each chunk
/// continues the current ciphertext at the next offset, or starts the next one once the
/// current is complete. Each at most [`MAX_INPUT_BYTES`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) async fn receive_ciphertexts(
    chunks: &mut (impl tokio_stream::Stream<Item = Result<AnalyticsInputChunk, Status>> + Unpin),
    count: usize,
) -> Result<Vec<Vec<u8>>, Status> {
    receive_ciphertexts_limited(chunks, count, MAX_INPUT_BYTES).await
}

/// [`receive_ciphertexts`] with each ciphertext at most `max_bytes` (refused at its first
/// chunk, from the size it announces).
pub(crate) async fn receive_ciphertexts_limited(
    chunks: &mut (impl tokio_stream::Stream<Item = Result<AnalyticsInputChunk, Status>> + Unpin),
    count: usize,
    max_bytes: u64,
) -> Result<Vec<Vec<u8>>, Status> {
    let mut ciphertexts: Vec<Vec<u8>> = Vec::with_capacity(count);
    // The ciphertext being received: (index, total bytes).
    let mut current: Option<(usize, u64)> = None;
    let is_complete = |cts: &[Vec<u8>], current: Option<(usize, u64)>| {
        current.is_some_and(|(i, total)| cts[i].len() as u64 == total)
    };
    while let Some(next) = chunks.next().await {
        let Some(Part::Data(data)) = next?.part else {
            return Err(invalid("a second header in one upload").into());
        };
        let index = data.index as usize;
        if current.is_none_or(|(i, _)| i != index) {
            if index != ciphertexts.len()
                || (current.is_some() && !is_complete(&ciphertexts, current))
            {
                return Err(invalid(format!(
                    "ciphertext {index} arrived out of order (ciphertext {} is {})",
                    ciphertexts.len().saturating_sub(1),
                    if is_complete(&ciphertexts, current) {
                        "complete"
                    } else {
                        "incomplete"
                    }
                ))
                .into());
            }
            if index >= count {
                return Err(
                    invalid(format!("ciphertext {index}: the header announced {count}")).into(),
                );
            }
            if data.total_bytes == 0 || data.total_bytes > max_bytes {
                return Err(invalid(format!(
                    "ciphertext {index} of {} bytes: 1 to {max_bytes} accepted",
                    data.total_bytes
                ))
                .into());
            }
            ciphertexts.push(Vec::with_capacity(
                usize::try_from(data.total_bytes.min(4 << 20)).unwrap_or(0),
            ));
            current = Some((index, data.total_bytes));
        }
        let total = current.map_or(0, |(_, t)| t);
        let buffer = &mut ciphertexts[index];
        if data.total_bytes != total
            || data.offset != buffer.len() as u64
            || buffer.len() as u64 + data.data.len() as u64 > total
        {
            return Err(invalid(format!(
                "ciphertext {index}: a chunk of {} bytes at offset {} (total {}) does not \
                 continue the {} bytes received of {total}",
                data.data.len(),
                data.offset,
                data.total_bytes,
                buffer.len()
            ))
            .into());
        }
        buffer.extend_from_slice(&data.data);
    }
    if ciphertexts.len() != count || !is_complete(&ciphertexts, current) {
        return Err(invalid(format!(
            "the upload ended with {} of {count} ciphertexts started, the last {}",
            ciphertexts.len(),
            if is_complete(&ciphertexts, current) {
                "complete"
            } else {
                "incomplete"
            }
        ))
        .into());
    }
    Ok(ciphertexts)
}

#[tonic::async_trait]
impl AnalyticsIngest for AnalyticsIngestService {
    async fn upload_input(
        &self,
        request: Request<Streaming<AnalyticsInputChunk>>,
    ) -> Result<Response<AnalyticsInputAck>, Status> {
        let principal = auth::principal(request.extensions()).cloned();
        let ack = self
            .receive(principal.as_ref(), request.into_inner())
            .await?;
        Ok(Response::new(ack))
    }
}

#[cfg(test)]
mod tests {
    use seer_proto::v1::AnalyticsInputData;

    use super::*;
    use crate::auth::Principal;

    fn household(meter: &str) -> Principal {
        Principal::Household {
            meter_id: MeterId::try_new(meter).expect("meter"),
        }
    }

    fn header() -> AnalyticsInputHeader {
        AnalyticsInputHeader {
            kind: "forecast".into(),
            meter_id: "m1".into(),
            input_id: "2024-03-12@c9f3ecc00a34ea49".into(),
            model_blake3: "c9".repeat(32),
            slot_offset: 216,
            slot_count: 216,
            first_period: "2024-03-04T00:00".into(),
            group: 3,
            inputs: 1,
            ..AnalyticsInputHeader::default()
        }
    }

    fn refusal(principal: Option<&Principal>, h: &AnalyticsInputHeader) -> String {
        AnalyticsIngestService::check_header(principal, h, 16_384)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn headers_are_checked() {
        let me = household("m1");
        let ok = AnalyticsIngestService::check_header(Some(&me), &header(), 16_384)
            .expect("a valid header");
        assert_eq!(ok.block(), 216..432);
        assert_eq!(ok.group, 3);

        assert!(refusal(None, &header()).contains("not authenticated"));
        assert!(refusal(Some(&household("m2")), &header()).contains("may not upload"));
        assert!(refusal(Some(&Principal::Utility), &header()).contains("may not upload"));
        type Mutation = fn(&mut AnalyticsInputHeader);
        let cases: [(&str, Mutation); 10] = [
            ("is not uploaded here", |h| h.kind = "bill".into()),
            ("is not uploaded here", |h| h.kind = "anomaly".into()),
            ("carries 1 ciphertexts, not 2", |h| h.inputs = 2),
            ("printable", |h| h.input_id = "a b".into()),
            ("printable", |h| h.input_id = String::new()),
            ("64 lowercase hex", |h| h.model_blake3 = "C9".repeat(32)),
            ("exceeds the 16384 slots", |h| h.slot_offset = 16_300),
            ("is empty", |h| h.slot_count = 0),
            ("an hour", |h| h.first_period = "2024-03-04".into()),
            ("an hour", |h| h.first_period = "2024-03-04T05:30".into()),
        ];
        for (needle, mutate) in cases {
            let mut h = header();
            mutate(&mut h);
            let message = refusal(Some(&me), &h);
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }

    fn daily_header() -> AnalyticsInputHeader {
        AnalyticsInputHeader {
            kind: "daily".into(),
            meter_id: "m1".into(),
            input_id: "daily-2024-03-12".into(),
            model_blake3: "d1".repeat(32),
            slot_offset: 1024,
            slot_count: 512,
            first_period: "2024-03-12".into(),
            group: 7,
            inputs: 1,
            lane: "exact".into(),
            ..AnalyticsInputHeader::default()
        }
    }

    #[test]
    fn daily_headers_name_one_whole_block_and_the_day() {
        let me = household("m1");
        let ok = AnalyticsIngestService::check_header(Some(&me), &daily_header(), 2048)
            .expect("a valid daily header");
        assert_eq!(
            (ok.kind.as_str(), ok.block(), ok.group),
            ("daily", 1024..1536, 7)
        );
        type Mutation = fn(&mut AnalyticsInputHeader);
        let cases: [(&str, Mutation); 9] = [
            ("fills one block", |h| h.slot_count = 256),
            ("fills one block", |h| h.slot_offset = 256),
            ("exceeds the 2048 slots", |h| h.slot_offset = 2048),
            ("carries 1 ciphertexts, not 2", |h| h.inputs = 2),
            ("not a day", |h| h.first_period = "2024-03-12T00:00".into()),
            ("not a day", |h| h.first_period = "2024-3-12".into()),
            ("not a day", |h| h.first_period = "2024-02-30".into()),
            ("is \"daily-2024-03-12\"", |h| {
                h.input_id = "daily-2024-03-11".into()
            }),
            ("is \"daily-2024-03-12\"", |h| {
                h.input_id = "2024-03-12".into()
            }),
        ];
        for (needle, mutate) in cases {
            let mut h = daily_header();
            mutate(&mut h);
            let message = AnalyticsIngestService::check_header(Some(&me), &h, 2048)
                .expect_err("refused")
                .to_string();
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        assert_eq!(inputs_of("daily"), Some(1));
        assert_eq!(inputs_of("anomaly"), None);
    }

    fn data(
        index: u32,
        total: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<AnalyticsInputChunk, Status> {
        Ok(AnalyticsInputChunk {
            part: Some(Part::Data(AnalyticsInputData {
                index,
                total_bytes: total,
                offset,
                data: bytes.to_vec(),
            })),
        })
    }

    async fn reassemble(
        chunks: Vec<Result<AnalyticsInputChunk, Status>>,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, String> {
        receive_ciphertexts(&mut tokio_stream::iter(chunks), count)
            .await
            .map_err(|s| {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
                s.message().to_owned()
            })
    }

    #[tokio::test]
    async fn chunks_are_reassembled_in_order_only() {
        let ok = reassemble(
            vec![
                data(0, 5, 0, b"abc"),
                data(0, 5, 3, b"de"),
                data(1, 2, 0, b"xy"),
            ],
            2,
        )
        .await
        .expect("two ciphertexts");
        assert_eq!(ok, vec![b"abcde".to_vec(), b"xy".to_vec()]);

        let cases: [(&str, Vec<Result<AnalyticsInputChunk, Status>>); 7] = [
            ("ended with 1 of 2", vec![data(0, 2, 0, b"ab")]),
            (
                "incomplete",
                vec![data(0, 5, 0, b"ab"), data(1, 1, 0, b"x")],
            ),
            (
                "out of order",
                vec![data(1, 1, 0, b"x"), data(0, 1, 0, b"y")],
            ),
            (
                "does not continue",
                vec![data(0, 5, 0, b"ab"), data(0, 5, 3, b"de")],
            ),
            ("does not continue", vec![data(0, 2, 0, b"abc")]),
            ("accepted", vec![data(0, MAX_INPUT_BYTES + 1, 0, b"a")]),
            (
                "announced 2",
                vec![
                    data(0, 1, 0, b"a"),
                    data(1, 1, 0, b"b"),
                    data(2, 1, 0, b"c"),
                ],
            ),
        ];
        for (needle, chunks) in cases {
            let message = reassemble(chunks, 2).await.expect_err("refused");
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        let header_again = vec![Ok(AnalyticsInputChunk {
            part: Some(Part::Header(header())),
        })];
        let message = reassemble(header_again, 1).await.expect_err("refused");
        assert!(message.contains("second header"), "{message}");
    }
}

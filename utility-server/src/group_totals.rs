//! The group-totals job: ask the key authority to release a noise group's hourly totals of
//! one window, and store what it releases.
//!
//! Meters add to their analytics lanes shares of one discrete Laplace draw per reading
//! interval, sized for their noise group (their billing group) by the plan each batch
//! carries and signs (`seer.v1.NoisePlan`; see `group_totals.proto` for the whole protocol).
//! The utility cannot sum the lanes into a total it could read: only the key authority
//! decrypts, after checking every batch again and adding its top-up for missing meters. For
//! one (group, window) the job:
//!
//! 1. reads the plans the window's batches carry ([`Store::window_plans`]) and names in the
//!    request's header the one most of them carry ([`choose_plan`]). Batches under another
//!    plan are sent all the same: the key authority refuses them with a reason, which the
//!    report shows, rather than the utility deciding what a meter meant;
//! 2. streams the header, then every batch of the window in (meter, sequence) order exactly
//!    as its meter signed it, its billing lane replaced by the lane's BLAKE3
//!    ([`request_stream`]). Batches are read page by page from the store, so a group of a
//!    thousand meters never has its lanes in memory at once, and no billing lane is read at
//!    all (its digest was stored at ingest). Should the store fail mid-stream, the request is
//!    abandoned rather than ended: a stream that ended cleanly would let the key authority
//!    release the window from the inputs sent so far;
//! 3. records each hour the key authority released, now or by an earlier request, once
//!    ([`Store::record_group_total`]); an hour answered as already released must equal the
//!    stored row, or the report shows a conflict;
//! 4. returns a [`GroupTotalsReport`]: every hour of the window with its status and values
//!    (released, already released, or withheld for too few meters present: those may be
//!    released by a later run, once more batches arrived), the counts of each, conflicts,
//!    and the inputs accepted and those refused, with the key authority's reasons.
//!
//! [`run_pending`] runs every (group, window) that has plan-carrying batches, has ended and
//! has hours not yet released ([`Store::pending_group_windows`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::group_totals_client::GroupTotalsClient;
use seer_proto::v1::group_totals_request::Item;
use seer_proto::v1::{
    GroupHourStatus, GroupTotalsHeader, GroupTotalsInput, GroupTotalsRequest, GroupTotalsResponse,
    NoisePlan,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::batch::utc_rfc3339;
pub use crate::key_authority::JobError;
use crate::store::{
    BatchKey, GroupTotal, MAX_WINDOW_PAGE_SIZE, PlanCount, RecordOutcome, Store, StoreError,
    WindowBatch,
};

/// Requests buffered between the store's pages and the gRPC stream (each holds one analytics
/// lane, so the job holds at most this many lanes beyond the page being read).
pub const STREAM_BUFFER: usize = 8;

/// The plan the header names, as the report shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlanSummary {
    /// Meters in the noise group (n).
    pub group_size: u32,
    /// Meters that may be absent or collude (t).
    pub tolerated: u32,
    /// The clamp Δ, Wh per reading.
    pub sensitivity_wh: i64,
    /// ε per reading of the released totals.
    pub epsilon: f64,
    /// The window's start, as the meters signed it.
    pub window_start: String,
    /// Seconds per reading interval.
    pub interval_seconds: u32,
    /// Intervals in the window.
    pub window_slots: u32,
    /// Batches of the window that carry this plan.
    pub batches: u64,
    /// Meters among them.
    pub meters: u64,
}

/// An input the key authority left out of the sum.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InputRefusal {
    /// The meter.
    pub meter_id: String,
    /// The batch's sequence.
    pub sequence: u64,
    /// The key authority's reason.
    pub reason: String,
}

/// What the key authority answered for one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HourStatus {
    /// Released by this request.
    Released,
    /// Released by an earlier request; its values returned again, no new draw.
    AlreadyReleased,
    /// Withheld: some interval had fewer meters present than the plan's floor.
    TooFewPresent,
    /// A status this build does not know.
    Unknown,
}

/// One hour of the answer, as the report shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HourReport {
    /// Start of the hour, UTC (as the key authority wrote it when it is not RFC 3339).
    pub hour_start: String,
    /// What happened to it.
    pub status: HourStatus,
    /// Whole Wh in the hour, with noise (`null` unless released).
    pub total_wh: Option<i64>,
    /// Whole Wh per interval, with noise (released hours, when asked for).
    pub interval_wh: Vec<i64>,
    /// The fewest meters present in an interval of the hour.
    pub min_present: u32,
    /// ε per reading of each home in the hour's total.
    pub epsilon: f64,
    /// The scale Δ/ε of each interval's draw, Wh.
    pub noise_scale_wh: f64,
}

/// An hour whose answer the utility could not record as it stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HourConflict {
    /// Start of the hour, as the key authority wrote it.
    pub hour_start: String,
    /// What is wrong.
    pub reason: String,
}

/// What one run for one (group, window) did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupTotalsReport {
    /// The noise group.
    pub group: u32,
    /// The window's start, UTC.
    pub window_start: String,
    /// The plan named in the request (`null` when the window has no plan-carrying batch and
    /// nothing was asked).
    pub plan: Option<PlanSummary>,
    /// Distinct plans among the window's batches.
    pub plans_seen: usize,
    /// Inputs sent (every batch of the window).
    pub inputs_sent: u64,
    /// Inputs the key authority summed.
    pub accepted: u32,
    /// Inputs it left out, with its reasons.
    pub refused: Vec<InputRefusal>,
    /// Every hour of the answer, in order.
    pub hours: Vec<HourReport>,
    /// Hours released by this request (and stored).
    pub released: usize,
    /// Hours released by an earlier request, returned again (and stored if they were not).
    pub already_released: usize,
    /// Hours withheld for too few meters present.
    pub withheld: usize,
    /// Hours whose answer differs from what is stored, or could not be read.
    pub conflicts: Vec<HourConflict>,
    /// The key authority's audit entry of the request (`null` when nothing was asked).
    pub audit_seq: Option<u64>,
    /// Wall-clock time of the release call, in milliseconds.
    #[serde(rename = "release_ms", serialize_with = "serialize_millis")]
    pub release_time: Duration,
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// The plan a release request names: the one most of the window's batches carry (among
/// equally common plans the first of `plans`, which [`Store::window_plans`] orders in the
/// plans' field order); `None` without plans. Its `first_slot` and `slot_count` are zero.
#[must_use]
pub fn choose_plan(plans: &[PlanCount]) -> Option<&PlanCount> {
    let mut best: Option<&PlanCount> = None;
    for count in plans {
        if best.is_none_or(|b| count.batches > b.batches) {
            best = Some(count);
        }
    }
    best
}

/// The header of a release request for `group` under `plan`.
#[must_use]
pub fn header(group: u32, plan: NoisePlan, per_interval: bool) -> GroupTotalsRequest {
    GroupTotalsRequest {
        item: Some(Item::Header(GroupTotalsHeader {
            group,
            plan: Some(plan),
            per_interval,
        })),
    }
}

/// One input of a release request: the batch as its meter signed it, with its billing lane
/// left empty and given by its BLAKE3.
#[must_use]
pub fn input(batch: WindowBatch) -> GroupTotalsRequest {
    let WindowBatch {
        mut batch,
        billing_lane_blake3,
    } = batch;
    batch.billing_lane = Vec::new();
    GroupTotalsRequest {
        item: Some(Item::Input(GroupTotalsInput {
            batch: Some(batch),
            billing_lane_blake3: billing_lane_blake3.to_vec(),
        })),
    }
}

/// A release request being read from the store (see [`request_stream`]).
#[derive(Debug)]
pub struct RequestStream {
    /// The messages in order: the header, then one input per batch of the window. The stream
    /// ends once every batch was sent; after a store failure it never ends (see
    /// [`RequestStream::failure`]).
    pub requests: ReceiverStream<GroupTotalsRequest>,
    failure: oneshot::Receiver<StoreError>,
    sent: Arc<AtomicU64>,
}

impl RequestStream {
    /// Inputs handed to the stream so far.
    #[must_use]
    pub fn inputs_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The store's failure, if reading the window failed: the stream then stays open,
    /// without further messages, until it is dropped, so that a request cut short is never
    /// mistaken for a whole one.
    pub fn failure(&mut self) -> Option<StoreError> {
        self.failure.try_recv().ok()
    }
}

/// Streams a release request for `group`'s window starting at `window_start`: `header`
/// first, then [`input`] for each batch of the window in (meter, sequence) order, read from
/// `store` a page at a time by a task of its own (at most [`STREAM_BUFFER`] inputs wait to be
/// sent).
#[must_use]
pub fn request_stream(
    store: Store,
    group: u32,
    window_start: DateTime<Utc>,
    header: GroupTotalsRequest,
) -> RequestStream {
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    let (fail, failure) = oneshot::channel();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(
        async move {
            let read = send_window(&store, group, window_start, header, &sender, &counter).await;
            if let Err(error) = read {
                tracing::error!(
                    %error,
                    cause = ?std::error::Error::source(&error),
                    "reading the window failed: abandoning the request"
                );
                let _ = fail.send(error);
                // Ending the stream now would send a clean end of stream: hold it open until
                // the call is dropped.
                sender.closed().await;
            }
        }
        .instrument(tracing::Span::current()),
    );
    RequestStream {
        requests: ReceiverStream::new(receiver),
        failure,
        sent,
    }
}

/// Sends `header` and the window's inputs into `sender`; stops early (without error) when the
/// receiving side is gone.
async fn send_window(
    store: &Store,
    group: u32,
    window_start: DateTime<Utc>,
    header: GroupTotalsRequest,
    sender: &mpsc::Sender<GroupTotalsRequest>,
    sent: &AtomicU64,
) -> Result<(), StoreError> {
    if sender.send(header).await.is_err() {
        return Ok(());
    }
    let mut after: Option<BatchKey> = None;
    loop {
        let page = store
            .window_batches(group, window_start, after.as_ref(), MAX_WINDOW_PAGE_SIZE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.key()?);
        tracing::debug!(inputs = page.len(), "page of inputs read");
        for batch in page {
            if sender.send(input(batch)).await.is_err() {
                return Ok(());
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Parses a window's start (RFC 3339, any offset) into the UTC instant that names it.
///
/// # Errors
/// When `text` is not RFC 3339.
pub fn parse_window_start(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

fn empty_report(group: u32, window_start: DateTime<Utc>) -> GroupTotalsReport {
    GroupTotalsReport {
        group,
        window_start: utc_rfc3339(window_start),
        plan: None,
        plans_seen: 0,
        inputs_sent: 0,
        accepted: 0,
        refused: Vec::new(),
        hours: Vec::new(),
        released: 0,
        already_released: 0,
        withheld: 0,
        conflicts: Vec::new(),
        audit_seq: None,
        release_time: Duration::ZERO,
    }
}

/// Asks the key authority behind `channel` (with the utility's `token`) to release the hourly
/// totals of noise group `group` over the window starting at `window_start` (see the
/// [module documentation](self)), each interval's too when `per_interval`; stores what it
/// releases and reports.
///
/// # Errors
/// When the store fails, the token is not a valid header, the key authority refuses the
/// request as a whole (bad token, wrong role, malformed header, audit log unavailable), or
/// answers for another group or window.
#[tracing::instrument(
    skip(store, channel, token),
    fields(window_start = %utc_rfc3339(window_start))
)]
pub async fn run(
    store: &Store,
    channel: Channel,
    token: &str,
    group: u32,
    window_start: DateTime<Utc>,
    per_interval: bool,
) -> Result<GroupTotalsReport, JobError> {
    let mut report = empty_report(group, window_start);
    let plans = store.window_plans(group, window_start).await?;
    report.plans_seen = plans.len();
    let Some(chosen) = choose_plan(&plans) else {
        tracing::info!("no plan-carrying batch in this window: nothing to release");
        return Ok(report);
    };
    let plan = NoisePlan {
        first_slot: 0,
        slot_count: 0,
        ..chosen.plan.clone()
    };
    report.plan = Some(PlanSummary {
        group_size: plan.group_size,
        tolerated: plan.tolerated,
        sensitivity_wh: plan.sensitivity_wh,
        epsilon: plan.epsilon,
        window_start: plan.window_start.clone(),
        interval_seconds: plan.interval_seconds,
        window_slots: plan.window_slots,
        batches: chosen.batches,
        meters: chosen.meters,
    });
    if plans.len() > 1 {
        tracing::warn!(
            plans = plans.len(),
            "the window's batches carry different plans: those under another plan than the \
             most common one will be refused"
        );
    }
    tracing::info!(
        group_size = plan.group_size,
        tolerated = plan.tolerated,
        epsilon = plan.epsilon,
        window_slots = plan.window_slots,
        "asking the key authority to release the window"
    );
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| JobError::Token)?;
    let mut client =
        GroupTotalsClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        })
        .with_seer_limits();
    let started = Instant::now();
    let RequestStream {
        requests,
        mut failure,
        sent,
    } = request_stream(
        store.clone(),
        group,
        window_start,
        header(group, plan, per_interval),
    );
    let call = client.release(requests);
    tokio::pin!(call);
    let answer = tokio::select! {
        biased;
        Ok(error) = &mut failure => {
            // Dropping the call abandons the request (its stream never ended).
            return Err(JobError::Store(error));
        }
        answer = &mut call => answer,
    };
    report.release_time = started.elapsed();
    report.inputs_sent = sent.load(Ordering::Relaxed);
    let response = match answer {
        Ok(response) => response.into_inner(),
        Err(status) => {
            if let Ok(error) = failure.try_recv() {
                return Err(JobError::Store(error));
            }
            return Err(JobError::Release {
                code: status.code(),
                message: status.message().to_owned(),
            });
        }
    };
    record_response(store, &mut report, response).await?;
    tracing::info!(
        released = report.released,
        already_released = report.already_released,
        withheld = report.withheld,
        conflicts = report.conflicts.len(),
        accepted = report.accepted,
        refused = report.refused.len(),
        inputs = report.inputs_sent,
        release_ms = report.release_time.as_secs_f64() * 1e3,
        "group totals run done"
    );
    Ok(report)
}

/// Records the key authority's answer into `report` and the store.
async fn record_response(
    store: &Store,
    report: &mut GroupTotalsReport,
    response: GroupTotalsResponse,
) -> Result<(), JobError> {
    let window_matches = parse_window_start(&response.window_start)
        .is_ok_and(|t| utc_rfc3339(t) == report.window_start);
    if response.group != report.group || !window_matches {
        return Err(JobError::Release {
            code: tonic::Code::Internal,
            message: format!(
                "the key authority answered for group {} window {:?}, not group {} window {}",
                response.group, response.window_start, report.group, report.window_start
            ),
        });
    }
    report.accepted = response.accepted;
    report.audit_seq = Some(response.audit_seq);
    for refusal in response.refused {
        tracing::warn!(
            meter = %refusal.meter_id,
            sequence = refusal.sequence,
            reason = %refusal.reason,
            "input refused"
        );
        report.refused.push(InputRefusal {
            meter_id: refusal.meter_id,
            sequence: refusal.sequence,
            reason: refusal.reason,
        });
    }
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    for hour in response.hours {
        let parsed = parse_window_start(&hour.start).ok();
        let status = match GroupHourStatus::try_from(hour.status) {
            Ok(GroupHourStatus::Released) => HourStatus::Released,
            Ok(GroupHourStatus::AlreadyReleased) => HourStatus::AlreadyReleased,
            Ok(GroupHourStatus::TooFewPresent) => HourStatus::TooFewPresent,
            Ok(GroupHourStatus::Unspecified) | Err(_) => HourStatus::Unknown,
        };
        let released = matches!(status, HourStatus::Released | HourStatus::AlreadyReleased);
        report.hours.push(HourReport {
            hour_start: parsed.map_or_else(|| hour.start.clone(), utc_rfc3339),
            status,
            total_wh: released.then_some(hour.total_wh),
            interval_wh: hour.interval_wh.clone(),
            min_present: hour.min_present,
            epsilon: hour.epsilon,
            noise_scale_wh: hour.noise_scale_wh,
        });
        let conflict = |reason: String| HourConflict {
            hour_start: hour.start.clone(),
            reason,
        };
        match status {
            HourStatus::Released => report.released += 1,
            HourStatus::AlreadyReleased => report.already_released += 1,
            HourStatus::TooFewPresent => {
                report.withheld += 1;
                continue;
            }
            HourStatus::Unknown => {
                report
                    .conflicts
                    .push(conflict(format!("unknown status {}", hour.status)));
                continue;
            }
        }
        let Some(hour_start) = parsed else {
            report
                .conflicts
                .push(conflict("the hour's start is not RFC 3339".into()));
            continue;
        };
        let total = GroupTotal {
            billing_group: report.group,
            hour_start,
            total_wh: hour.total_wh,
            interval_wh: hour.interval_wh,
            min_present: hour.min_present,
            epsilon: hour.epsilon,
            noise_scale_wh: hour.noise_scale_wh,
            audit_seq: response.audit_seq,
            released_at_us: now_us,
        };
        if let RecordOutcome::Conflict(stored) = store.record_group_total(&total).await? {
            tracing::error!(
                hour = %hour.start,
                "the key authority's answer differs from the stored release"
            );
            report.conflicts.push(conflict(format!(
                "answered {} Wh (min present {}, ε {}, scale {} Wh, intervals {:?}), stored \
                 {} Wh (min present {}, ε {}, scale {} Wh, intervals {:?}, audit entry {})",
                total.total_wh,
                total.min_present,
                total.epsilon,
                total.noise_scale_wh,
                total.interval_wh,
                stored.total_wh,
                stored.min_present,
                stored.epsilon,
                stored.noise_scale_wh,
                stored.interval_wh,
                stored.audit_seq
            )));
        }
    }
    Ok(())
}

/// Runs [`run`] for every (group, window) that has plan-carrying batches, ended by
/// `ended_by`, and has hours not yet released, in group and window order.
///
/// # Errors
/// The first failing run's error (the windows before it are released and stored).
pub async fn run_pending(
    store: &Store,
    channel: Channel,
    token: &str,
    per_interval: bool,
    ended_by: DateTime<Utc>,
) -> Result<Vec<GroupTotalsReport>, JobError> {
    let pending = store.pending_group_windows(ended_by).await?;
    tracing::info!(windows = pending.len(), "pending noise windows");
    let mut reports = Vec::with_capacity(pending.len());
    for window in pending {
        tracing::info!(
            group = window.group,
            window_start = %utc_rfc3339(window.window_start),
            hours = window.hours,
            released = window.released,
            "pending window"
        );
        reports.push(
            run(
                store,
                channel.clone(),
                token,
                window.group,
                window.window_start,
                per_interval,
            )
            .await?,
        );
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use seer_proto::v1::{GroupHour, GroupInputRefusal, UploadBatch};
    use tokio_stream::StreamExt as _;

    use super::*;
    use crate::batch::Batch;

    /// A fresh SQLite store in `dir`.
    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::connect(&format!("sqlite://{}/seer.db", dir.path().display()))
            .await
            .expect("open the store")
    }

    const WINDOW: &str = "2007-01-01T00:00:00+05:30";

    fn plan(epsilon: f64, first_slot: u32, slot_count: u32) -> NoisePlan {
        NoisePlan {
            group_size: 200,
            tolerated: 20,
            sensitivity_wh: 3_450,
            epsilon,
            window_start: WINDOW.into(),
            interval_seconds: 900,
            window_slots: 96,
            first_slot,
            slot_count,
        }
    }

    /// Meter `meter`'s batch of the whole of 2007-01-01 (+05:30) in group `group`.
    fn day_batch(meter: &str, group: u32, epsilon: f64) -> UploadBatch {
        UploadBatch {
            meter_id: meter.into(),
            sequence: 1,
            period: "2007-01".into(),
            start: WINDOW.into(),
            end: "2007-01-02T00:00:00+05:30".into(),
            readings: 96,
            billing_lane: format!("billing lane of {meter}").into_bytes(),
            billing_position: 0,
            billing_group: group,
            analytics_lane: format!("analytics lane of {meter}").into_bytes(),
            epsilon_spent: 0.0,
            signature: vec![7; 64],
            meter_certificate: b"certificate".to_vec(),
            noise_plan: Some(plan(epsilon, 0, 96)),
        }
    }

    async fn insert(store: &Store, wire: &UploadBatch) {
        let batch = Batch::try_from_wire(wire.clone(), 1024).expect("a valid batch");
        store.insert_batch(&batch).await.expect("insert");
    }

    fn window() -> DateTime<Utc> {
        parse_window_start(WINDOW).expect("window")
    }

    #[test]
    fn the_most_common_plan_is_chosen_and_ties_go_to_the_first() {
        let count = |epsilon, batches| PlanCount {
            plan: plan(epsilon, 0, 0),
            batches,
            meters: batches,
        };
        assert!(choose_plan(&[]).is_none());
        let plans = [count(0.25, 2), count(0.5, 5), count(1.0, 5), count(2.0, 1)];
        let chosen = choose_plan(&plans).expect("a plan");
        assert_eq!(chosen.plan.epsilon.to_bits(), 0.5_f64.to_bits());
        assert_eq!((chosen.plan.first_slot, chosen.plan.slot_count), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_request_is_the_header_then_every_batch_of_the_window_in_order() {
        let dir = tempfile::tempdir().expect("directory");
        let store = store(&dir).await;
        // More meters than a page holds, inserted out of order; a few under another plan; one
        // in another group, one without a plan.
        let meters = MAX_WINDOW_PAGE_SIZE as usize + 6;
        let mut sent = Vec::new();
        for m in (0..meters).rev() {
            let epsilon = if m % 10 == 3 { 0.25 } else { 0.5 };
            let wire = day_batch(&format!("meter-{m:03}"), 4, epsilon);
            insert(&store, &wire).await;
            sent.push(wire);
        }
        insert(&store, &day_batch("meter-other-group", 5, 0.5)).await;
        insert(
            &store,
            &UploadBatch {
                noise_plan: None,
                ..day_batch("meter-old", 4, 0.5)
            },
        )
        .await;

        let plans = store.window_plans(4, window()).await.expect("plans");
        assert_eq!(plans.len(), 2);
        let chosen = choose_plan(&plans).expect("a plan");
        assert_eq!(chosen.batches, meters as u64 - 7);
        assert_eq!(chosen.plan, plan(0.5, 0, 0));

        let mut stream = request_stream(
            store.clone(),
            4,
            window(),
            header(4, chosen.plan.clone(), true),
        );
        let mut messages = Vec::new();
        while let Some(message) = stream.requests.next().await {
            messages.push(message.item.expect("an item"));
        }
        assert!(stream.failure().is_none());
        assert_eq!(stream.inputs_sent(), meters as u64);
        let mut messages = messages.into_iter();
        let Some(Item::Header(first)) = messages.next() else {
            panic!("the header comes first");
        };
        assert_eq!(
            first,
            GroupTotalsHeader {
                group: 4,
                plan: Some(plan(0.5, 0, 0)),
                per_interval: true,
            }
        );
        sent.sort_by(|a, b| a.meter_id.cmp(&b.meter_id));
        let inputs: Vec<GroupTotalsInput> = messages
            .map(|item| match item {
                Item::Input(input) => input,
                Item::Header(_) => panic!("one header only"),
            })
            .collect();
        assert_eq!(inputs.len(), sent.len());
        for (input, original) in inputs.iter().zip(&sent) {
            assert_eq!(
                input.billing_lane_blake3,
                blake3::hash(&original.billing_lane).as_bytes()
            );
            assert_eq!(
                input.batch.as_ref(),
                Some(&UploadBatch {
                    billing_lane: Vec::new(),
                    ..original.clone()
                })
            );
        }
        // The statement the key authority rebuilds is the one the meter signed.
        let input = &inputs[0];
        let digest: [u8; 32] = input
            .billing_lane_blake3
            .as_slice()
            .try_into()
            .expect("32 bytes");
        assert_eq!(
            seer_proto::statements::batch_statement(input.batch.as_ref().expect("batch"), digest),
            crate::signatures::batch_statement(&sent[0])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_failure_never_ends_the_request() {
        let dir = tempfile::tempdir().expect("directory");
        let store = store(&dir).await;
        insert(&store, &day_batch("meter-1", 0, 0.5)).await;
        store.close().await;
        let mut stream = request_stream(store, 0, window(), header(0, plan(0.5, 0, 0), false));
        let first = stream.requests.next().await.expect("the header");
        assert!(matches!(first.item, Some(Item::Header(_))));
        let next = tokio::time::timeout(Duration::from_millis(300), stream.requests.next()).await;
        assert!(next.is_err(), "the stream must stay open after a failure");
        assert!(matches!(stream.failure(), Some(StoreError::Query { .. })));
    }

    fn hour(start: &str, status: GroupHourStatus, total_wh: i64) -> GroupHour {
        GroupHour {
            start: start.into(),
            status: status as i32,
            total_wh,
            interval_wh: vec![],
            min_present: 150,
            epsilon: 0.5,
            noise_scale_wh: 6_900.0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_are_recorded_and_conflicts_reported() {
        let dir = tempfile::tempdir().expect("directory");
        let store = store(&dir).await;
        let mut report = empty_report(4, window());
        let response = GroupTotalsResponse {
            group: 4,
            window_start: WINDOW.into(),
            hours: vec![
                hour(
                    "2007-01-01T00:00:00+05:30",
                    GroupHourStatus::Released,
                    1_000,
                ),
                hour("2006-12-31T19:30:00Z", GroupHourStatus::Released, 2_000),
                hour(
                    "2007-01-01T02:00:00+05:30",
                    GroupHourStatus::TooFewPresent,
                    0,
                ),
                hour("not a time", GroupHourStatus::Released, 3),
                hour("2007-01-01T03:00:00+05:30", GroupHourStatus::Unspecified, 0),
            ],
            refused: vec![GroupInputRefusal {
                meter_id: "meter-9".into(),
                sequence: 3,
                reason: "the batch's plan is not the header's".into(),
            }],
            accepted: 180,
            audit_seq: 77,
        };
        record_response(&store, &mut report, response)
            .await
            .expect("recorded");
        assert_eq!(
            (report.released, report.already_released, report.withheld),
            (3, 0, 1)
        );
        let statuses: Vec<HourStatus> = report.hours.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            [
                HourStatus::Released,
                HourStatus::Released,
                HourStatus::TooFewPresent,
                HourStatus::Released,
                HourStatus::Unknown
            ]
        );
        assert_eq!(report.hours[2].min_present, 150);
        assert_eq!(report.hours[2].total_wh, None);
        assert_eq!(report.hours[1].hour_start, "2006-12-31T19:30:00Z");
        assert_eq!(report.hours[3].hour_start, "not a time");
        assert_eq!(report.conflicts.len(), 2);
        assert_eq!(report.refused[0].sequence, 3);
        assert_eq!((report.accepted, report.audit_seq), (180, Some(77)));
        let stored = store
            .group_totals(4, window(), window() + chrono::TimeDelta::hours(24))
            .await
            .expect("read");
        let totals: Vec<i64> = stored.iter().map(|t| t.total_wh).collect();
        assert_eq!(totals, [1_000, 2_000]);
        assert_eq!(stored[1].audit_seq, 77);
        assert_eq!(utc_rfc3339(stored[1].hour_start), "2006-12-31T19:30:00Z");

        // Asked again: the same values are already released; other values are a conflict.
        let mut again = empty_report(4, window());
        let response = GroupTotalsResponse {
            group: 4,
            window_start: "2006-12-31T18:30:00Z".into(),
            hours: vec![
                hour(
                    "2007-01-01T00:00:00+05:30",
                    GroupHourStatus::AlreadyReleased,
                    1_000,
                ),
                hour(
                    "2007-01-01T01:00:00+05:30",
                    GroupHourStatus::AlreadyReleased,
                    2_001,
                ),
            ],
            refused: vec![],
            accepted: 180,
            audit_seq: 78,
        };
        record_response(&store, &mut again, response)
            .await
            .expect("recorded");
        assert_eq!(again.already_released, 2);
        assert_eq!(again.hours[0].total_wh, Some(1_000));
        assert_eq!(again.conflicts.len(), 1);
        assert!(
            again.conflicts[0].reason.contains("2001"),
            "{:?}",
            again.conflicts
        );
        assert_eq!(
            store
                .group_totals(4, window(), window() + chrono::TimeDelta::hours(24))
                .await
                .expect("read")[1]
                .total_wh,
            2_000
        );

        // An answer for another group or window is refused as a whole.
        for (group, window_start) in [(5, WINDOW), (4, "2007-01-02T00:00:00+05:30")] {
            let response = GroupTotalsResponse {
                group,
                window_start: window_start.into(),
                ..GroupTotalsResponse::default()
            };
            let error = record_response(&store, &mut empty_report(4, window()), response)
                .await
                .expect_err("another group or window");
            assert!(matches!(error, JobError::Release { .. }), "{error}");
        }
    }

    #[test]
    fn reports_serialize_as_json() {
        let json = serde_json::to_value(empty_report(4, window())).expect("json");
        assert_eq!(json["window_start"], "2006-12-31T18:30:00Z");
        assert_eq!(json["plan"], serde_json::Value::Null);
        assert_eq!(json["release_ms"], 0.0);
        let hour = HourReport {
            hour_start: "2006-12-31T18:30:00Z".into(),
            status: HourStatus::AlreadyReleased,
            total_wh: Some(-3),
            interval_wh: vec![-1, -1, -1, 0],
            min_present: 8,
            epsilon: 1.0,
            noise_scale_wh: 3_450.0,
        };
        let json = serde_json::to_value(hour).expect("json");
        assert_eq!(json["status"], "already_released");
        assert_eq!(json["total_wh"], -3);
        assert_eq!(json["interval_wh"].as_array().map(Vec::len), Some(4));
    }
}

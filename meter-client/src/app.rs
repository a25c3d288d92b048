//! The meter's run: source → batches → durable queue, with the receipt recorder and the
//! uploader draining the queue concurrently (a batch leaves it when both are done with it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use seer_ckks::{CkksContext, Encryptor};
use seer_core::circuits::billing::{self, BillingLayout};
use seer_core::dp::AnalyticsNoise;
use seer_core::tariff::Tariff;

use crate::Event;
use crate::batch::{BatchBuilder, BatchConfig, BuiltBatch, PrivacySettings, split_windows};
use crate::daily::{DailyFollower, DailyLane, DailyRunReport, DailySettings, DaySelection};
use crate::error::Error;
use crate::grpc::{BearerToken, fetch_public_key, pin_and_load};
use crate::identity::DeviceIdentity;
use crate::mqtt::{IngestReport, LiveFeed};
use crate::queue::{Identity, PinOutcome, StateStore};
use crate::receipts::{ReceiptConfig, ReceiptReport, record_receipts};
use crate::signing::sign_batch;
use crate::source::{
    DateRange, MeterReading, OpenedSource, ReadingStream, SourceSpec, TARGET_INTERVAL, open,
};
use crate::tokens::TokenSource;
use crate::upload::{Backoff, ProducerStatus, UploadConfig, UploadReport, upload};
use seer_auth::{AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER};
use seer_core::data::EnergySeries;
use tracing::Instrument as _;

/// Everything a run needs. Built from the command line by the binary; tests build it directly.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The meter's id (a household token's meter).
    pub meter_id: String,
    /// Where readings come from.
    pub source: SourceSpec,
    /// Which dates of the source to read.
    pub range: DateRange,
    /// The meter's home number in the deployment: its billing block is
    /// [`BillingLayout::locate`] of it.
    pub home_index: u64,
    /// The utility server; `None` only queues (an offline meter: a later run records the
    /// receipts and uploads).
    pub utility_url: Option<String>,
    /// The key authority (public key, receipts).
    pub key_authority_url: String,
    /// The configured fingerprints of the key authority's public keys: only a key matching
    /// one is used (see [`crate::pins`]).
    pub public_key_pins: Vec<crate::pins::KeyPin>,
    /// The household token, sent on every call.
    pub token: Option<BearerToken>,
    /// The state directory (SQLite queue and lane state).
    pub state_dir: PathBuf,
    /// The analytics lane's privacy settings.
    pub privacy: PrivacySettings,
    /// Days per batch, `1 ..= 31`.
    pub batch_days: u32,
    /// The tariff (the utility's; its slabs and bands shape the billing lane).
    pub tariff: Tariff,
    /// Replay pace as a multiple of real time (`86400`: a day per second); `None`: as fast
    /// as possible.
    pub replay_speed: Option<f64>,
    /// The producer waits while this many batches are unacknowledged (when uploading).
    pub max_queued: u64,
    /// Batches in flight on the upload stream.
    pub upload_window: usize,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Consecutive failed attempts before giving up (key fetch, receipts and upload).
    pub max_attempts: u32,
    /// The registered daily model file (`seer-daily`): when given (and uploading), every day
    /// of the source the run completes is sent on the daily lane as `meter-client daily` sends
    /// it (see [`crate::daily::DailyFollower`]); `None`: no daily lane.
    pub daily_model: Option<PathBuf>,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunReport {
    /// Readings in the source range.
    pub readings: usize,
    /// Intervals skipped for missing source readings.
    pub skipped_intervals: usize,
    /// Batches built and queued by this run.
    pub queued: u64,
    /// Bytes of billing-lane ciphertext queued by this run.
    pub billing_bytes: u64,
    /// Bytes of analytics-lane ciphertext queued by this run.
    pub analytics_bytes: u64,
    /// Whether the public key was pinned by this run (first use).
    pub key_pinned_now: bool,
    /// The upload, when a utility server was given.
    pub upload: Option<UploadReport>,
    /// The receipts recorded with the key authority, when a utility server was given.
    pub receipts: Option<ReceiptReport>,
    /// Batches left in the outbox at the end.
    pub still_queued: u64,
    /// The daily lane, when a daily model was given.
    pub daily: Option<DailyRunReport>,
    /// The broker connection, for a live source ([`crate::mqtt`]).
    pub mqtt: Option<IngestReport>,
}

/// Runs the meter with noise seeded from the operating system.
///
/// # Errors
/// See [`run_with_noise`].
pub async fn run(
    settings: Settings,
    observer: Arc<dyn Fn(&Event) + Send + Sync>,
) -> Result<RunReport, Error> {
    let noise = BatchBuilder::os_noise(&settings.privacy)?;
    run_with_noise(settings, noise, observer).await
}

/// Runs the meter: opens the state, fetches and pins the public key, loads the source, builds
/// and commits a batch per window after the last committed reading, and (with a utility
/// server) records the receipts with the key authority and uploads, concurrently, until every
/// batch and every receipt is acknowledged. `noise` is injected so tests can fix its seed.
///
/// # Errors
/// Any [`Error`]: bad settings or input, a changed public key or identity, a refused upload or
/// receipt, exhausted retries. When both the upload and the receipts fail, the upload's error
/// is returned (the receipts' is logged). Batches committed before the error stay queued for
/// the next run.
///
/// With [`Settings::daily_model`] the daily lane runs alongside (see
/// [`crate::daily::DailyFollower`]): its failures are logged and reported in
/// [`RunReport::daily`], never returned, and never stop the batches.
pub async fn run_with_noise(
    settings: Settings,
    noise: AnalyticsNoise,
    observer: Arc<dyn Fn(&Event) + Send + Sync>,
) -> Result<RunReport, Error> {
    let store = Arc::new(StateStore::open(&settings.state_dir).await?);
    let result = run_on(&settings, Arc::clone(&store), noise, observer).await;
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
    result
}

async fn run_on(
    settings: &Settings,
    store: Arc<StateStore>,
    noise: AnalyticsNoise,
    observer: Arc<dyn Fn(&Event) + Send + Sync>,
) -> Result<RunReport, Error> {
    let mut report = RunReport::default();
    let ctx = tokio::task::spawn_blocking(|| CkksContext::new(billing::PARAMETER_SET)).await??;
    let layout = BillingLayout::try_new(&settings.tariff, &ctx)?;
    let home_index = usize::try_from(settings.home_index).map_err(|_| Error::InvalidSetting {
        setting: "home index",
        reason: format!("{} is too large", settings.home_index),
    })?;
    store
        .ensure_identity(&Identity::new(
            settings.meter_id.clone(),
            settings.home_index,
            &settings.tariff,
        ))
        .await?;

    // The source first: bad input fails before any network call. A live source has nothing
    // to load: its readings arrive in its inbox and are fed to the producer below.
    let live = match &settings.source {
        SourceSpec::Mqtt(source) => Some(source.clone()),
        _ => None,
    };
    let (spec, range) = (settings.source.clone(), settings.range);
    let (opened, stream) = tokio::task::spawn_blocking(move || {
        let (opened, stream) = match &spec {
            SourceSpec::Mqtt(_) => (
                OpenedSource::Series(EnergySeries::try_new(TARGET_INTERVAL, None, Vec::new())?),
                ReadingStream::try_new(TARGET_INTERVAL, Vec::new())?,
            ),
            _ => {
                let opened = open(&spec)?;
                let stream = opened.select(range)?;
                (opened, stream)
            }
        };
        tracing::info!(
            source = %spec,
            interval = %stream.interval(),
            readings = stream.readings().len(),
            skipped_intervals = stream.skipped_intervals(),
            shift = %range.shift,
            "source loaded"
        );
        Ok::<_, Error>((Arc::new(opened), stream))
    })
    .await??;
    let group_size = layout.capacity() as u64;
    let daily_lane = daily_lane(settings, group_size)?;
    report.readings = stream.readings().len();
    report.skipped_intervals = stream.skipped_intervals();
    observer(&Event::SourceLoaded {
        readings: stream.readings().len(),
        skipped_intervals: stream.skipped_intervals(),
        interval: stream.interval(),
    });
    // The public key: fetched, checked against the pin, loaded.
    let key_bytes = with_retries(settings, &*observer, || {
        fetch_public_key(
            &settings.key_authority_url,
            settings.token.clone(),
            ctx.parameter_set_id(),
        )
    })
    .await?;
    let (public_key, outcome) =
        pin_and_load(&store, &ctx, &key_bytes, &settings.public_key_pins).await?;
    report.key_pinned_now = outcome == PinOutcome::Pinned;
    observer(&Event::KeyPinned {
        parameter_set: ctx.parameter_set_id().to_owned(),
        blake3: blake3::hash(&key_bytes).to_hex().to_string(),
        first_use: report.key_pinned_now,
    });
    let encryptor = Encryptor::new(&ctx, &public_key)?;

    let minutes = stream.interval().as_secs() / 60;
    if !settings.tariff.boundaries_aligned_to(minutes.max(1)) {
        tracing::warn!(
            interval = %stream.interval(),
            "the tariff's time-of-use boundaries are not aligned to the readings: a reading \
             is billed entirely in the band of its start"
        );
    }
    let config = BatchConfig {
        meter_id: settings.meter_id.clone(),
        home_index,
        interval: stream.interval(),
        utc_offset: stream.utc_offset(),
        batch_days: settings.batch_days,
        privacy: settings.privacy,
    };
    let mut builder = BatchBuilder::try_new(config, &ctx, encryptor, layout, noise)?;
    let identity = load_identity(settings)?;
    let tokens = |audience: &str| {
        identity.as_ref().map(|id| {
            Arc::new(TokenSource::new(
                &settings.key_authority_url,
                Arc::clone(id),
                audience,
            ))
        })
    };

    // The uploader and the receipt recorder, concurrently.
    let mut state = store.lane_state(&settings.tariff).await?;
    let (status_tx, status_rx) = tokio::sync::watch::channel(ProducerStatus {
        built_through: state.next_sequence - 1,
        finished: false,
    });
    let mut workers = match &settings.utility_url {
        Some(url) => {
            let config = UploadConfig {
                url: url.clone(),
                token: settings.token.clone(),
                tokens: tokens(AUDIENCE_UTILITY_SERVER),
                identity: identity.clone(),
                meter_id: settings.meter_id.clone(),
                window: settings.upload_window,
                backoff: settings.backoff,
                max_attempts: settings.max_attempts,
            };
            let uploader = {
                let store = Arc::clone(&store);
                let observer = Arc::clone(&observer);
                let status_rx = status_rx.clone();
                tokio::spawn(seer_tls::inherit_client_identity(async move {
                    upload(store, &config, status_rx, &*observer).await
                }))
            };
            let config = ReceiptConfig {
                url: settings.key_authority_url.clone(),
                token: settings.token.clone(),
                tokens: tokens(AUDIENCE_KEY_AUTHORITY),
                identity: identity.clone(),
                meter_id: settings.meter_id.clone(),
                backoff: settings.backoff,
                max_attempts: settings.max_attempts,
            };
            let recorder = {
                let store = Arc::clone(&store);
                let observer = Arc::clone(&observer);
                tokio::spawn(seer_tls::inherit_client_identity(async move {
                    record_receipts(store, &config, status_rx, &*observer).await
                }))
            };
            Some(Workers { uploader, recorder })
        }
        None => None,
    };
    // The daily lane, concurrently: told of each day the readings complete.
    let mut daily = None;
    if let Some(lane) = daily_lane {
        match (&settings.utility_url, stream.readings().first()) {
            (Some(utility), Some(first)) => {
                let follower = DailyFollower::new(
                    daily_settings(settings, utility, group_size),
                    lane,
                    Arc::clone(&opened),
                    first.start.date(),
                );
                daily = Some(spawn_daily(follower, Arc::clone(&store)));
            }
            (None, _) => {
                tracing::warn!(
                    "the daily lane sends with --utility only: no day is sent by this offline \
                     run (the next run with --utility sends them)"
                );
                report.daily = Some(DailyRunReport {
                    error: Some("offline run: no utility server to send to".into()),
                    ..DailyRunReport::default()
                });
            }
            (Some(_), None) => report.daily = Some(DailyRunReport::default()),
        }
    }

    // The producer: a loaded source's readings after the last one committed, at once; a live
    // source's windows as they complete, until it is stopped (see `crate::mqtt`).
    let mut loaded: Option<Vec<MeterReading>> = Some(
        stream
            .readings()
            .iter()
            .copied()
            .filter(|r| state.last_reading.is_none_or(|last| r.start > last))
            .collect(),
    );
    let mut feed = match &live {
        Some(source) => Some(
            LiveFeed::start(
                source,
                &settings.meter_id,
                Arc::clone(&store),
                settings.batch_days,
            )
            .await?,
        ),
        None => None,
    };
    let produced: Result<(), Error> = async {
        loop {
            let pending = match (loaded.take(), &mut feed) {
                (Some(pending), _) => pending,
                (None, Some(feed)) => match feed.next(state.last_reading).await? {
                    Some(pending) => {
                        report.readings += pending.len();
                        pending
                    }
                    None => break,
                },
                (None, None) => break,
            };
            for window in split_windows(&pending, settings.batch_days)? {
                if let Some(w) = &workers {
                    while store.queued_count().await? >= settings.max_queued.max(1) {
                        if w.uploader.is_finished() || w.recorder.is_finished() {
                            // A worker stopped early (its error is reported below).
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let chunk = window.to_vec();
                let current = state.clone();
                let (returned, built) = tokio::task::spawn_blocking(move || {
                    let built = builder.build(&current, &chunk);
                    (builder, built)
                })
                .await?;
                builder = returned;
                let built = built?;
                // Signed when built (see `crate::signing`), stored with the batch.
                let signatures = identity.as_ref().map(|id| sign_batch(id, &built.batch));
                store
                    .commit_batch_signed(&built, signatures.as_ref())
                    .await?;
                let BuiltBatch { batch, next, .. } = built;
                state = next;
                report.queued += 1;
                report.billing_bytes += batch.billing_lane.len() as u64;
                report.analytics_bytes += batch.analytics_lane.len() as u64;
                status_tx.send_replace(ProducerStatus {
                    built_through: batch.sequence,
                    finished: false,
                });
                if let Some(d) = &daily {
                    // The days the batch's readings complete (a closed channel: the lane ended).
                    let _ = d.days.send(batch.end.date() - chrono::TimeDelta::days(1));
                }
                observer(&Event::Queued {
                    sequence: batch.sequence,
                    start: batch.start,
                    readings: batch.readings,
                    billing_bytes: batch.billing_lane.len(),
                    analytics_bytes: batch.analytics_lane.len(),
                    epsilon_spent: batch.epsilon_spent,
                });
                if let Some(speed) = settings.replay_speed
                    && speed > 0.0
                {
                    let span = (batch.end - batch.start).to_std().unwrap_or_default();
                    tokio::time::sleep(span.div_f64(speed)).await;
                }
            }
        }
        Ok(())
    }
    .await;
    // A live source's connection: stopped, and its report (or its fatal error) taken.
    let produced = match (produced, feed) {
        (Ok(()), Some(feed)) => feed.finish().await.map(|ingest| {
            report.mqtt = Some(ingest);
        }),
        (produced, _) => produced,
    };
    status_tx.send_replace(ProducerStatus {
        built_through: state.next_sequence - 1,
        finished: true,
    });
    if let Err(e) = produced {
        if let Some(d) = daily.take() {
            // What the lane sent is durable (kept and marked in the state directory).
            d.task.abort();
            let _ = d.task.await;
        }
        if let Some(w) = workers.take() {
            w.uploader.abort();
            w.recorder.abort();
            // Wait for the tasks to be dropped, so the store (and its lock) is released.
            let _ = w.uploader.await;
            let _ = w.recorder.await;
        }
        return Err(e);
    }
    if let Some(d) = daily.take() {
        // Every day the source's readings complete, then the lane's own end.
        if let Some(through) = complete_through(&stream) {
            let _ = d.days.send(through);
        }
        drop(d.days);
        report.daily = Some(d.task.await?);
    }
    if let Some(w) = workers.take() {
        // Each runs to its own end: a failure of one never interrupts the durable progress of
        // the other.
        let uploaded = w.uploader.await.map_err(Error::from).and_then(|r| r);
        let recorded = w.recorder.await.map_err(Error::from).and_then(|r| r);
        match (uploaded, recorded) {
            (Ok(u), Ok(r)) => {
                report.upload = Some(u);
                report.receipts = Some(r);
            }
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
            (Err(e), Err(other)) => {
                tracing::error!(error = %other, "recording receipts failed too");
                return Err(e);
            }
        }
    }
    report.still_queued = store.queued_count().await?;
    Ok(report)
}

/// The meter's device identity, when its state directory holds one. An enrolled meter signs
/// every batch and receipt and obtains its tokens with its device key (`RenewToken`, one per
/// audience); an unenrolled one may still queue offline, and may upload only with a
/// configured token to servers that do not check signatures (the SEER servers refuse).
fn load_identity(settings: &Settings) -> Result<Option<Arc<DeviceIdentity>>, Error> {
    match DeviceIdentity::load(&settings.state_dir, &settings.meter_id) {
        Ok(identity) => Ok(Some(Arc::new(identity))),
        Err(error @ Error::NotEnrolled { .. }) => {
            if settings.utility_url.is_some() {
                if settings.token.is_none() {
                    return Err(error);
                }
                tracing::warn!(%error, "uploading unsigned batches with the configured token");
            }
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// The daily model of `settings`, loaded (a bad file or a replay into another month fails the
/// run before any network call), for the home's billing group of `group_size` homes.
fn daily_lane(settings: &Settings, group_size: u64) -> Result<Option<DailyLane>, Error> {
    let Some(path) = &settings.daily_model else {
        return Ok(None);
    };
    if let SourceSpec::Mqtt(_) = settings.source {
        return Err(Error::InvalidSetting {
            setting: "daily model",
            reason: "the daily lane reads each day's four weeks of history from a file source: \
                     it cannot follow a live source"
                .into(),
        });
    }
    if !settings.range.shift.is_none() {
        return Err(Error::InvalidSetting {
            setting: "daily model",
            reason: "the daily lane reads each day's four weeks of history as the source dates \
                     them: it cannot follow a replay into another month (--replay-as)"
                .into(),
        });
    }
    DailyLane::load(path, settings.home_index, group_size).map(Some)
}

/// The settings of `meter-client daily` that the run's daily lane uses.
fn daily_settings(settings: &Settings, utility_url: &str, group_size: u64) -> DailySettings {
    DailySettings {
        meter_id: settings.meter_id.clone(),
        source: settings.source.clone(),
        // Unused: the follower names each day.
        days: DaySelection::Pending(chrono::NaiveDate::MIN),
        model: settings.daily_model.clone().unwrap_or_default(),
        home_index: settings.home_index,
        group_size,
        utility_url: utility_url.to_owned(),
        key_authority_url: settings.key_authority_url.clone(),
        public_key_pins: settings.public_key_pins.clone(),
        token: settings.token.clone(),
        state_dir: settings.state_dir.clone(),
    }
}

/// The last day whose readings `stream` holds through its end (local midnight), if any.
fn complete_through(stream: &ReadingStream) -> Option<chrono::NaiveDate> {
    let last = stream.readings().last()?;
    let end = last.start + stream.interval().as_time_delta();
    Some(end.date() - chrono::TimeDelta::days(1))
}

/// The daily lane's task and the channel telling it the days completed.
struct DailyTask {
    days: tokio::sync::mpsc::UnboundedSender<chrono::NaiveDate>,
    task: tokio::task::JoinHandle<DailyRunReport>,
}

/// Runs `follower` until the channel closes; completions that arrive while it sends are
/// taken together.
fn spawn_daily(mut follower: DailyFollower, store: Arc<StateStore>) -> DailyTask {
    let (days, mut rx) = tokio::sync::mpsc::unbounded_channel::<chrono::NaiveDate>();
    let span = tracing::info_span!("daily_lane");
    let task = tokio::spawn(seer_tls::inherit_client_identity(
        async move {
            while let Some(mut through) = rx.recv().await {
                while let Ok(later) = rx.try_recv() {
                    through = through.max(later);
                }
                follower.complete_through(through, &store).await;
            }
            follower.finish()
        }
        .instrument(span),
    ));
    DailyTask { days, task }
}

/// The tasks draining the queue.
struct Workers {
    uploader: tokio::task::JoinHandle<Result<UploadReport, Error>>,
    recorder: tokio::task::JoinHandle<Result<ReceiptReport, Error>>,
}

/// Runs `attempt` until it succeeds, fails finally, or has failed transiently
/// `max_attempts` times in a row.
async fn with_retries<T, F, Fut>(
    settings: &Settings,
    observer: &(dyn Fn(&Event) + Send + Sync),
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => {
                failures += 1;
                if failures >= settings.max_attempts.max(1) {
                    return Err(Error::RetriesExhausted {
                        attempts: failures,
                        last: Box::new(e),
                    });
                }
                let delay = settings.backoff.delay(failures);
                observer(&Event::Reconnecting {
                    attempt: failures,
                    delay,
                    error: e.to_string(),
                });
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

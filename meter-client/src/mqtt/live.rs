//! The broker connection (receive → commit → acknowledge) and the feed of complete windows
//! that the run's producer batches; see the [module docs](super).

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode};
use seer_core::data::Interval;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::payload::{Malformed, Sample};
use super::{MAX_CLOCK_AHEAD, MqttSource, inbox, readings};
use crate::batch::window_of;
use crate::error::Error;
use crate::queue::StateStore;
use crate::source::{MeterReading, TARGET_INTERVAL};

/// Keep-alive of the broker connection.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Requests (acknowledgements, the subscription) the client may queue for the event loop:
/// far above the broker's in-flight window (Mosquitto: 20), so queueing never fails.
const REQUEST_CAPACITY: usize = 1024;
/// The longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// What the broker connection did in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Samples committed to the inbox by this run.
    pub stored: u64,
    /// Redeliveries of samples already stored.
    pub duplicates: u64,
    /// Messages refused as malformed (logged, acknowledged, counted).
    pub malformed: u64,
    /// Connections lost and re-established.
    pub reconnects: u64,
}

/// A running live source: the broker connection in a task, and the complete windows of its
/// inbox for the producer ([`LiveFeed::next`]).
#[derive(Debug)]
pub struct LiveFeed {
    source: MqttSource,
    store: Arc<StateStore>,
    batch_days: u32,
    latest: watch::Receiver<Option<NaiveDateTime>>,
    stopped: watch::Receiver<bool>,
    ingest: Option<JoinHandle<Result<IngestReport, Error>>>,
    signals: JoinHandle<()>,
    report: Option<IngestReport>,
    /// The inbox is derived again once `latest` reaches this (`None`: at once).
    next_cut: Option<NaiveDateTime>,
}

impl LiveFeed {
    /// Connects to the broker of `source` as `meter_id`'s persistent session and starts
    /// storing its messages in `store`'s inbox; SIGINT or SIGTERM stops the feed.
    ///
    /// # Errors
    /// A database error reading the inbox, or signal handlers that cannot be installed.
    pub async fn start(
        source: &MqttSource,
        meter_id: &str,
        store: Arc<StateStore>,
        batch_days: u32,
    ) -> Result<Self, Error> {
        let counts = inbox::counts(store.pool(), &source.topic).await?;
        tracing::info!(
            broker = %source,
            topic = %source.topic,
            format = %source.format,
            stored = counts.samples,
            malformed = counts.malformed,
            duplicates = counts.duplicates,
            latest = ?counts.latest,
            "live source"
        );
        let (latest_tx, latest) = watch::channel(counts.latest);
        let (stop_tx, stopped) = watch::channel(false);
        let signals = tokio::spawn(wait_for_signal(stop_tx)?);
        let mut options =
            MqttOptions::new(MqttSource::client_id(meter_id), &source.host, source.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(false)
            .set_manual_acks(true);
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let connection = Connection {
            source: source.clone(),
            store: Arc::clone(&store),
            client,
            latest: latest_tx,
            report: IngestReport::default(),
        };
        let span = tracing::info_span!("mqtt_ingest", broker = %source, topic = %source.topic);
        let ingest = tokio::spawn(connection.run(eventloop, stopped.clone()).instrument(span));
        Ok(Self {
            source: source.clone(),
            store,
            batch_days,
            latest,
            stopped,
            ingest: Some(ingest),
            signals,
            report: None,
            next_cut: None,
        })
    }

    /// The readings after `last` (the last reading batched) of every window the inbox has
    /// completed, waiting for the next window to complete; `None` once the feed is stopped
    /// (a signal, or the connection's end).
    ///
    /// # Errors
    /// The connection's fatal error (a refused subscription, a database error), or a database
    /// error deriving the readings.
    pub async fn next(
        &mut self,
        last: Option<NaiveDateTime>,
    ) -> Result<Option<Vec<MeterReading>>, Error> {
        let interval: Interval = TARGET_INTERVAL;
        loop {
            if *self.stopped.borrow() {
                return Ok(None);
            }
            let latest = *self.latest.borrow_and_update();
            if let Some(latest) = latest
                && self.next_cut.is_none_or(|cut| latest >= cut)
            {
                let since = last.map(|t| t + interval.as_time_delta());
                let samples = inbox::samples(self.store.pool(), &self.source.topic, since).await?;
                let derived = readings::derive(&samples, interval)?;
                let mut complete = Vec::new();
                let mut first_pending = None;
                for r in derived.readings {
                    if last.is_some_and(|l| r.start <= l) {
                        continue;
                    }
                    let (_, end) = window_of(r.start, self.batch_days)?;
                    if end <= latest {
                        complete.push(r);
                    } else {
                        first_pending = Some(end);
                        break;
                    }
                }
                if !complete.is_empty() {
                    tracing::info!(
                        readings = complete.len(),
                        gap_intervals = derived.gap_intervals,
                        resets = derived.resets.len(),
                        through = %latest,
                        "windows complete"
                    );
                    self.next_cut = None;
                    return Ok(Some(complete));
                }
                let (_, latest_window_end) =
                    window_of(readings::floor(latest, interval), self.batch_days)?;
                self.next_cut = Some(first_pending.unwrap_or(latest_window_end));
            }
            tokio::select! {
                changed = self.latest.changed() => {
                    if changed.is_err() {
                        // The connection ended: its result says why.
                        return self.join().await.map(|()| None);
                    }
                }
                _ = self.stopped.changed() => {}
            }
        }
    }

    /// Stops the connection (if still running) and returns what it did.
    ///
    /// # Errors
    /// The connection's fatal error.
    pub async fn finish(mut self) -> Result<IngestReport, Error> {
        self.join().await?;
        Ok(self.report.take().unwrap_or_default())
    }

    async fn join(&mut self) -> Result<(), Error> {
        let Some(task) = self.ingest.take() else {
            return Ok(());
        };
        if !task.is_finished() && !*self.stopped.borrow() {
            // Stop reading: what was received but not committed is redelivered next time.
            // (When stopped by a signal, the connection ends by itself with its report.)
            task.abort();
        }
        match task.await {
            Ok(result) => self.report = Some(result?),
            Err(e) if e.is_cancelled() => {
                self.report = Some(IngestReport::default());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.signals.abort();
        if let Some(task) = &self.ingest {
            task.abort();
        }
    }
}

/// A task that sets `stop` on the first SIGINT or SIGTERM.
fn wait_for_signal(
    stop: watch::Sender<bool>,
) -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| {
        signal(kind).map_err(|e| Error::InvalidSetting {
            setting: "signals",
            reason: format!("cannot install a signal handler: {e}"),
        })
    };
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping the live source: no further message is read");
        stop.send_replace(true);
    })
}

/// The broker connection's state.
struct Connection {
    source: MqttSource,
    store: Arc<StateStore>,
    client: AsyncClient,
    latest: watch::Sender<Option<NaiveDateTime>>,
    report: IngestReport,
}

impl Connection {
    /// Polls the broker until `stopped`: (re)connects, subscribes on every connection, and
    /// hands each message to a second future that commits it and only then acknowledges it.
    /// The poller never waits for the committer (it forwards over an unbounded channel, which
    /// the broker's in-flight window bounds), so it keeps draining the client's requests —
    /// the acknowledgements — while the committer works.
    async fn run(
        mut self,
        mut eventloop: rumqttc::EventLoop,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<IngestReport, Error> {
        let (forward, mut received) = tokio::sync::mpsc::unbounded_channel::<Publish>();
        let client = self.client.clone();
        let topic = self.source.topic.clone();
        let broker = format!("{}:{}", self.source.host, self.source.port);
        let error = |reason: String| Error::Mqtt {
            broker: broker.clone(),
            reason,
        };
        let poller = async {
            let mut failures: u32 = 0;
            let mut reconnects: u64 = 0;
            loop {
                let event = tokio::select! {
                    biased;
                    _ = stopped.wait_for(|s| *s) => break,
                    event = eventloop.poll() => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        failures = 0;
                        tracing::info!(
                            session_present = ack.session_present,
                            "connected to the broker"
                        );
                        client
                            .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                            .map_err(|e| error(format!("cannot subscribe: {e}")))?;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, SubscribeReasonCode::Failure))
                        {
                            return Err(error(format!(
                                "the broker refused the subscription to {topic}"
                            )));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if forward.send(publish).is_err() {
                            // The committer stopped: its result says why.
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        reconnects += 1;
                        let delay = Duration::from_millis(200)
                            .saturating_mul(2_u32.saturating_pow(failures.min(8)))
                            .min(MAX_RECONNECT_DELAY);
                        tracing::warn!(%error, attempt = failures, ?delay, "broker connection lost: reconnecting");
                        tokio::select! {
                            _ = stopped.wait_for(|s| *s) => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            drop(forward);
            Ok::<_, Error>(reconnects)
        };
        let committer = async {
            while let Some(publish) = received.recv().await {
                self.receive(&publish).await?;
                // Only now, after the commit.
                self.client
                    .ack(&publish)
                    .await
                    .map_err(|e| error(format!("cannot acknowledge: {e}")))?;
            }
            Ok::<_, Error>(())
        };
        let (reconnects, ()) = tokio::try_join!(poller, committer)?;
        self.report.reconnects = reconnects;
        Ok(self.report)
    }

    /// Parses and commits one message (a malformed one is counted instead).
    async fn receive(&mut self, publish: &Publish) -> Result<(), Error> {
        let pool = self.store.pool();
        let topic = &self.source.topic;
        if publish.topic != *topic {
            // Not subscribed to: nothing to store (acknowledged so it is not redelivered).
            tracing::warn!(received_on = %publish.topic, "message on an unexpected topic ignored");
            return Ok(());
        }
        match self.parse(&publish.payload) {
            Ok(sample) => match inbox::store(pool, topic, &sample).await? {
                inbox::Stored::New => {
                    self.report.stored += 1;
                    self.latest.send_if_modified(|latest| {
                        if latest.is_none_or(|t| sample.time > t) {
                            *latest = Some(sample.time);
                            true
                        } else {
                            false
                        }
                    });
                }
                inbox::Stored::Duplicate { same_register } => {
                    self.report.duplicates += 1;
                    if !same_register {
                        tracing::warn!(
                            %topic,
                            time = %sample.time,
                            register = sample.register.units(),
                            "a second sample for a stored time with another register: the \
                             first one is kept"
                        );
                    }
                }
            },
            Err(reason) => {
                tracing::warn!(
                    %topic,
                    %reason,
                    bytes = publish.payload.len(),
                    "malformed payload: acknowledged and counted, not stored"
                );
                inbox::count_malformed(pool, topic).await?;
                self.report.malformed += 1;
            }
        }
        Ok(())
    }

    fn parse(&self, payload: &[u8]) -> Result<Sample, Malformed> {
        let sample = self.source.format.parse(payload)?;
        if sample.time > Utc::now().naive_utc() + MAX_CLOCK_AHEAD {
            return Err(Malformed::Future { time: sample.time });
        }
        Ok(sample)
    }
}

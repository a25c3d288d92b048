//! Refusals in the audit log, rate-limited and aggregated, so that no flood of refused calls
//! grows the log without bound.
//!
//! Every call the gate in front of the server refuses ([`seer_service::gate`]) comes here.
//! Within a window of [`RefusalSettings::window_secs`]:
//!
//! - a refusal **without a valid token** (no token, a malformed, expired or forged one) is
//!   only counted: whoever sent it cannot be named, so one entry per call would let anyone
//!   write the log;
//! - a refusal of an **authenticated** caller (a role that may not call the method, a caller
//!   over its in-flight bound) is written as its own entry, naming the caller, up to
//!   [`RefusalSettings::per_caller_per_window`] per (class, caller) and
//!   [`RefusalSettings::individual_per_window`] in all; beyond that it is counted.
//!
//! The counts of a window are written as one entry of kind `refusals.aggregate`
//! ([`RefusalAggregate`]: count, classes, callers, methods, first and last time) when the
//! window has closed — by a tick every second, on the next refusal, or at shutdown. An
//! aggregate that cannot be written is carried into the next window, never dropped. So the
//! log grows by at most `individual_per_window + 1` entries per window, whatever the flood,
//! and every refused call is either an entry or counted in exactly one aggregate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use seer_service::gate::{BoxFuture, GateRefusal, RefusalSink};
use serde::{Deserialize, Serialize};

use super::entry::{Decision, NewEntry, RequestKind};
use super::{AuditError, AuditLog};
use crate::auth::audit_chain::{AGGREGATE_KIND, RefusalAggregate};

/// How refusals are written (`[audit.refusals]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefusalSettings {
    /// Length of a window, in seconds.
    pub window_secs: u64,
    /// Individual entries per (refusal class, authenticated caller) per window.
    pub per_caller_per_window: u32,
    /// Individual refusal entries per window, all callers together.
    pub individual_per_window: u32,
}

impl Default for RefusalSettings {
    fn default() -> Self {
        Self {
            window_secs: 60,
            per_caller_per_window: 10,
            individual_per_window: 100,
        }
    }
}

impl RefusalSettings {
    /// Checks that the window is at least one second.
    ///
    /// # Errors
    /// Naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.window_secs > 0,
            "audit.refusals.window_secs must be at least 1"
        );
        Ok(())
    }

    /// The most entries refusals add to the log per window.
    #[must_use]
    pub fn max_entries_per_window(&self) -> u64 {
        u64::from(self.individual_per_window) + 1
    }
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Write it as its own entry.
    Individual,
    /// Count it in the window's aggregate.
    Counted,
}

/// One window's state (pure: the caller supplies the time).
#[derive(Debug)]
pub struct Window {
    started: DateTime<Utc>,
    length: chrono::Duration,
    per_caller: HashMap<(&'static str, String), u32>,
    individual: u32,
    pending: Option<RefusalAggregate>,
}

impl Window {
    /// A window starting at `now` of `length`.
    #[must_use]
    pub fn new(now: DateTime<Utc>, length: Duration) -> Self {
        Self {
            started: now,
            length: chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX),
            per_caller: HashMap::new(),
            individual: 0,
            pending: None,
        }
    }

    /// When the window has closed at `now`: its aggregate (if it counted anything), and a new
    /// window starts at `now`.
    pub fn roll(&mut self, now: DateTime<Utc>) -> Option<RefusalAggregate> {
        if now < self.started + self.length {
            return None;
        }
        self.started = now;
        self.per_caller.clear();
        self.individual = 0;
        self.pending.take()
    }

    /// The pending aggregate, whether or not the window has closed (at shutdown).
    pub fn take(&mut self) -> Option<RefusalAggregate> {
        self.pending.take()
    }

    /// Decides on one refusal of `class` by `caller` (`None`: unauthenticated, counted
    /// against `peer_key`) on `method` at `now`, counting it when it is not written alone.
    pub fn admit(
        &mut self,
        settings: &RefusalSettings,
        class: &'static str,
        caller: Option<&str>,
        peer_key: &str,
        method: &str,
        now: DateTime<Utc>,
    ) -> Treatment {
        if let Some(subject) = caller
            && self.individual < settings.individual_per_window
        {
            let seen = self
                .per_caller
                .entry((class, subject.to_owned()))
                .or_default();
            if *seen < settings.per_caller_per_window {
                *seen += 1;
                self.individual += 1;
                return Treatment::Individual;
            }
        }
        self.count(class, caller.unwrap_or(peer_key), method, now, 1);
        Treatment::Counted
    }

    fn count(&mut self, class: &str, who: &str, method: &str, now: DateTime<Utc>, n: u64) {
        let at = now.timestamp_micros();
        match &mut self.pending {
            Some(aggregate) => aggregate.add(class, who, method, at, n),
            None => {
                let mut aggregate = RefusalAggregate::first(class, who, method, at);
                aggregate.add(class, who, method, at, n - 1);
                self.pending = Some(aggregate);
            }
        }
    }

    /// Carries an aggregate that could not be written into this window.
    pub fn restore(&mut self, aggregate: &RefusalAggregate) {
        match &mut self.pending {
            Some(pending) => pending.merge(aggregate),
            None => self.pending = Some(aggregate.clone()),
        }
    }
}

/// The kind of an individual refusal entry for `method`.
fn kind_of(method: &str) -> RequestKind {
    match method {
        "/seer.v1.Release/ReleaseBills" => RequestKind::BILL,
        _ => constant_kind(match method {
            "/seer.v1.Analytics/Release" => "analytics",
            "/seer.v1.Analytics/ReleaseGroupForecast" => "daily-group-forecast",
            "/seer.v1.Receipts/Record" | "/seer.v1.AnalyticsReceipts/Record" => "receipt",
            _ => "call",
        }),
    }
}

fn constant_kind(name: &'static str) -> RequestKind {
    #[expect(clippy::expect_used, reason = "constant, valid kind names")]
    RequestKind::try_new(name).expect("valid kind")
}

/// Writes the gate's refusals into the audit log, rate-limited and aggregated (see the
/// [module documentation](self)).
#[derive(Debug, Clone)]
pub struct RefusalThrottle {
    log: Arc<AuditLog>,
    settings: RefusalSettings,
    window: Arc<Mutex<Window>>,
}

impl RefusalThrottle {
    /// A throttle writing into `log`.
    #[must_use]
    pub fn new(log: Arc<AuditLog>, settings: RefusalSettings) -> Self {
        let window = Window::new(Utc::now(), Duration::from_secs(settings.window_secs));
        Self {
            log,
            settings,
            window: Arc::new(Mutex::new(window)),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one refusal: its own entry, or counted (writing the previous window's
    /// aggregate first when that window has closed).
    ///
    /// # Errors
    /// When an individual entry cannot be written (the call then answers `UNAVAILABLE`).
    pub async fn record(&self, refusal: &GateRefusal) -> Result<(), AuditError> {
        let now = Utc::now();
        let caller_key = refusal.caller_key();
        let (closed, treatment) = {
            let mut window = self.window();
            let closed = window.roll(now);
            let treatment = window.admit(
                &self.settings,
                refusal.class,
                refusal.caller.as_ref().map(|_| caller_key.as_str()),
                &caller_key,
                &refusal.method,
                now,
            );
            (closed, treatment)
        };
        if let Some(aggregate) = closed {
            self.write_aggregate(aggregate).await;
        }
        if treatment == Treatment::Individual {
            let mut entry = NewEntry::new(
                kind_of(&refusal.method),
                Decision::refused(format!(
                    "{} ({}, {})",
                    refusal.message, refusal.class, refusal.method
                )),
            );
            if let Some(caller) = &refusal.caller {
                entry = entry.caller(caller);
            }
            self.log.append(entry).await?;
        }
        Ok(())
    }

    /// Records a refusal decided inside a handler rather than at the gate (an enrolment with a
    /// bad code or proof, a token renewal with a stale or foreign signature): `entry`, which
    /// names the meter and the reason, is written as its own entry while the window admits one
    /// for `caller_key` (the same per-caller and overall caps as the gate's refusals, shared
    /// with them), otherwise the refusal is counted in the window's aggregate under `class`.
    /// Such callers have presented no token, so whoever floods these calls writes at most the
    /// window's individual entries, however many meter ids they claim. Returns whether the
    /// entry was written.
    ///
    /// # Errors
    /// When an individual entry cannot be written.
    pub async fn record_entry(
        &self,
        class: &'static str,
        caller_key: &str,
        method: &str,
        entry: NewEntry,
    ) -> Result<bool, AuditError> {
        let now = Utc::now();
        let (closed, treatment) = {
            let mut window = self.window();
            let closed = window.roll(now);
            let treatment = window.admit(
                &self.settings,
                class,
                Some(caller_key),
                caller_key,
                method,
                now,
            );
            (closed, treatment)
        };
        if let Some(aggregate) = closed {
            self.write_aggregate(aggregate).await;
        }
        if treatment == Treatment::Individual {
            self.log.append(entry).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes the aggregate of a closed window, if any (the tick).
    pub async fn flush_closed(&self) {
        let closed = self.window().roll(Utc::now());
        if let Some(aggregate) = closed {
            self.write_aggregate(aggregate).await;
        }
    }

    /// Writes whatever is counted, window closed or not (at shutdown).
    pub async fn flush_all(&self) {
        let pending = self.window().take();
        if let Some(aggregate) = pending {
            self.write_aggregate(aggregate).await;
        }
    }

    /// Ticks every second until dropped: closed windows are written without waiting for the
    /// next refusal.
    #[must_use]
    pub fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let throttle = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                throttle.flush_closed().await;
            }
        })
    }

    async fn write_aggregate(&self, aggregate: RefusalAggregate) {
        let entry = NewEntry::new(
            constant_kind(AGGREGATE_KIND),
            Decision::refused(aggregate.to_reason()),
        );
        match self.log.append(entry).await {
            Ok(stored) => tracing::info!(
                sequence = stored.sequence,
                count = aggregate.count,
                "refusals aggregated"
            ),
            Err(error) => {
                tracing::warn!(%error, count = aggregate.count, "refusal aggregate not written; carried over");
                self.window().restore(&aggregate);
            }
        }
    }
}

impl RefusalSink for RefusalThrottle {
    fn refused(&self, refusal: GateRefusal) -> BoxFuture<Result<(), tonic::Status>> {
        let throttle = self.clone();
        Box::pin(async move { throttle.record(&refusal).await.map_err(tonic::Status::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid")
    }

    fn settings() -> RefusalSettings {
        RefusalSettings {
            window_secs: 60,
            per_caller_per_window: 2,
            individual_per_window: 3,
        }
    }

    #[test]
    fn unauthenticated_refusals_are_always_counted() {
        let mut window = Window::new(at(0), Duration::from_secs(60));
        for i in 0..1000 {
            let t = window.admit(
                &settings(),
                "unauthenticated.missing",
                None,
                "peer:10.0.0.1",
                "/m",
                at(i % 60),
            );
            assert_eq!(t, Treatment::Counted);
        }
        let aggregate = window.roll(at(60)).expect("the window closed");
        assert_eq!(aggregate.count, 1000);
        assert_eq!(aggregate.reasons["unauthenticated.missing"], 1000);
        assert_eq!(aggregate.callers["peer:10.0.0.1"], 1000);
        assert_eq!(
            (aggregate.first_unix_micros, aggregate.last_unix_micros),
            (at(0).timestamp_micros(), at(59).timestamp_micros())
        );
        assert!(window.roll(at(200)).is_none(), "nothing counted since");
    }

    #[test]
    fn authenticated_refusals_are_individual_up_to_both_bounds() {
        let s = settings();
        let mut window = Window::new(at(0), Duration::from_secs(60));
        let admit = |w: &mut Window, class: &'static str, who: &str, t: i64| {
            w.admit(&s, class, Some(who), "peer:x", "/m", at(t))
        };
        // Two per (class, caller)...
        assert_eq!(
            admit(&mut window, "role", "subject:a", 1),
            Treatment::Individual
        );
        assert_eq!(
            admit(&mut window, "role", "subject:a", 2),
            Treatment::Individual
        );
        assert_eq!(
            admit(&mut window, "role", "subject:a", 3),
            Treatment::Counted
        );
        // ...another class of the same caller is its own bucket; three in all per window.
        assert_eq!(
            admit(&mut window, "busy", "subject:a", 4),
            Treatment::Individual
        );
        assert_eq!(
            admit(&mut window, "role", "subject:b", 5),
            Treatment::Counted
        );
        let closed = window.roll(at(61)).expect("closed");
        assert_eq!(closed.count, 2);
        assert_eq!(closed.callers["subject:a"], 1);
        assert_eq!(closed.callers["subject:b"], 1);
        // A new window, new allowances.
        assert_eq!(
            admit(&mut window, "role", "subject:b", 62),
            Treatment::Individual
        );
        assert!(
            window.roll(at(100)).is_none(),
            "the window started at 61 is still open"
        );
        assert!(
            window.roll(at(121)).is_none(),
            "closed, but nothing was counted"
        );
    }

    #[test]
    fn entries_per_window_are_bounded_and_every_refusal_is_accounted_for() {
        let s = settings();
        let mut window = Window::new(at(0), Duration::from_secs(60));
        let (mut individual, mut aggregates, mut counted) = (0_u64, 0_u64, 0_u64);
        let mut windows = 1;
        for i in 0..10_000_i64 {
            let t = i / 50; // 200 seconds, 50 refusals a second
            if let Some(aggregate) = window.roll(at(t)) {
                aggregates += 1;
                counted += aggregate.count;
                windows += 1;
            }
            let caller = format!("subject:{}", i % 7);
            let who = (i % 3 == 0).then_some(caller.as_str());
            if window.admit(&s, "c", who, "peer:1", "/m", at(t)) == Treatment::Individual {
                individual += 1;
            }
        }
        if let Some(aggregate) = window.take() {
            aggregates += 1;
            counted += aggregate.count;
        }
        assert_eq!(individual + counted, 10_000);
        assert!(individual + aggregates <= windows * s.max_entries_per_window());
        assert_eq!(aggregates, windows);
    }

    #[test]
    fn an_unwritten_aggregate_is_carried_over_whole() {
        let mut window = Window::new(at(0), Duration::from_secs(60));
        for _ in 0..5 {
            window.admit(&settings(), "c", None, "peer:1", "/m", at(1));
        }
        let closed = window.roll(at(60)).expect("closed");
        window.admit(&settings(), "c", None, "peer:2", "/m", at(70));
        window.restore(&closed);
        let next = window.roll(at(120)).expect("closed");
        assert_eq!(next.count, 6);
        assert_eq!(next.first_unix_micros, at(1).timestamp_micros());
        assert_eq!(next.last_unix_micros, at(70).timestamp_micros());
    }

    #[test]
    fn kinds_follow_the_method() {
        assert_eq!(kind_of("/seer.v1.Release/ReleaseBills"), RequestKind::BILL);
        assert_eq!(kind_of("/seer.v1.Analytics/Release").as_str(), "analytics");
        assert_eq!(kind_of("/evil\n").as_str(), "call");
    }
}

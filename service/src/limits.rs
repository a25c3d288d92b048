//! Bounded work per server: how many calls may be in flight (per caller and overall), how
//! long a call may take, how long a request stream may stay silent, and the HTTP/2 limits of
//! every connection ([`LimitSettings`], `[server.limits]` in each program's settings); and the
//! [`Limiter`] that enforces the in-flight bounds without queueing.
//!
//! A call beyond a bound is refused at once with `RESOURCE_EXHAUSTED`: nothing waits in an
//! unbounded queue, so a flood costs the server a map lookup per call. The caller is the
//! token's subject when the call is authenticated, otherwise the peer's IP address (all ports
//! of one host are one caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::Server;

/// The bounds of one server (`[server.limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Calls in flight at once, all callers together; beyond it: `RESOURCE_EXHAUSTED`.
    pub max_concurrent_calls: usize,
    /// Calls in flight at once per caller (token subject, else peer IP address).
    pub max_concurrent_calls_per_caller: usize,
    /// Longest a call may take until its response starts (tonic's server timeout; a client's
    /// shorter `grpc-timeout` wins), in seconds.
    pub call_timeout_secs: u64,
    /// Longest a request stream may stay without a frame before the call fails, in seconds.
    pub stream_idle_timeout_secs: u64,
    /// Concurrent HTTP/2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams_per_connection: u32,
    /// Interval of HTTP/2 keepalive pings, in seconds; a peer that does not answer within
    /// [`Self::http2_keepalive_timeout_secs`] is disconnected.
    pub http2_keepalive_interval_secs: u64,
    /// How long a keepalive ping may go unanswered, in seconds.
    pub http2_keepalive_timeout_secs: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 256,
            max_concurrent_calls_per_caller: 32,
            // Deep analytics releases re-execute circuits for minutes.
            call_timeout_secs: 1800,
            stream_idle_timeout_secs: 120,
            max_concurrent_streams_per_connection: 128,
            http2_keepalive_interval_secs: 30,
            http2_keepalive_timeout_secs: 20,
        }
    }
}

impl LimitSettings {
    /// Checks that every bound is positive and the per-caller bound within the overall one.
    ///
    /// # Errors
    /// Naming the offending key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("max_concurrent_calls", self.max_concurrent_calls as u64),
            (
                "max_concurrent_calls_per_caller",
                self.max_concurrent_calls_per_caller as u64,
            ),
            ("call_timeout_secs", self.call_timeout_secs),
            ("stream_idle_timeout_secs", self.stream_idle_timeout_secs),
            (
                "max_concurrent_streams_per_connection",
                u64::from(self.max_concurrent_streams_per_connection),
            ),
            (
                "http2_keepalive_interval_secs",
                self.http2_keepalive_interval_secs,
            ),
            (
                "http2_keepalive_timeout_secs",
                self.http2_keepalive_timeout_secs,
            ),
        ];
        for (key, value) in positive {
            anyhow::ensure!(value > 0, "server.limits.{key} must be at least 1");
        }
        anyhow::ensure!(
            self.max_concurrent_calls_per_caller <= self.max_concurrent_calls,
            "server.limits.max_concurrent_calls_per_caller ({}) exceeds \
             server.limits.max_concurrent_calls ({})",
            self.max_concurrent_calls_per_caller,
            self.max_concurrent_calls
        );
        Ok(())
    }

    /// How long a request stream may stay silent.
    #[must_use]
    pub fn stream_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.stream_idle_timeout_secs)
    }

    /// Applies the per-connection and per-call bounds to a tonic server builder: the call
    /// timeout, HTTP/2 keepalive, concurrent streams and a concurrency limit per connection.
    #[must_use]
    pub fn apply<L>(&self, server: Server<L>) -> Server<L> {
        let per_connection = usize::try_from(self.max_concurrent_streams_per_connection)
            .unwrap_or(usize::MAX)
            .min(self.max_concurrent_calls);
        server
            .timeout(Duration::from_secs(self.call_timeout_secs))
            .http2_keepalive_interval(Some(Duration::from_secs(
                self.http2_keepalive_interval_secs,
            )))
            .http2_keepalive_timeout(Some(Duration::from_secs(self.http2_keepalive_timeout_secs)))
            .max_concurrent_streams(self.max_concurrent_streams_per_connection)
            .concurrency_limit_per_connection(per_connection)
            // Streams a client resets before the server answers count against it too.
            .http2_max_pending_accept_reset_streams(Some(per_connection))
    }
}

/// Which bound a call exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// The caller already has `limit` calls in flight.
    #[error("too many concurrent calls from this caller (limit {limit})")]
    PerCaller {
        /// The per-caller bound.
        limit: usize,
    },
    /// The server already has `limit` calls in flight.
    #[error("server busy: too many concurrent calls (limit {limit})")]
    Overall {
        /// The overall bound.
        limit: usize,
    },
}

/// Counts calls in flight per caller and overall; [`Limiter::try_acquire`] never waits.
#[derive(Debug, Clone)]
pub struct Limiter {
    overall: Arc<Semaphore>,
    overall_limit: usize,
    per_caller: usize,
    active: Arc<Mutex<HashMap<String, usize>>>,
}

/// One call's place in the [`Limiter`]; released on drop.
#[derive(Debug)]
pub struct CallPermit {
    _overall: OwnedSemaphorePermit,
    key: String,
    active: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = active.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                active.remove(&self.key);
            }
        }
    }
}

impl Limiter {
    /// A limiter admitting `overall` calls at once, `per_caller` of them from one caller.
    #[must_use]
    pub fn new(overall: usize, per_caller: usize) -> Self {
        Self {
            overall: Arc::new(Semaphore::new(overall)),
            overall_limit: overall,
            per_caller,
            active: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The limiter of `settings`.
    #[must_use]
    pub fn from_settings(settings: &LimitSettings) -> Self {
        Self::new(
            settings.max_concurrent_calls,
            settings.max_concurrent_calls_per_caller,
        )
    }

    /// A place for one call of `caller`, or which bound it would exceed. The map of callers
    /// holds only callers with calls in flight, so it is bounded by the overall limit.
    ///
    /// # Errors
    /// [`LimitExceeded`] when the caller or the server is at its bound.
    pub fn try_acquire(&self, caller: &str) -> Result<CallPermit, LimitExceeded> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let count = active.get(caller).copied().unwrap_or(0);
        if count >= self.per_caller {
            return Err(LimitExceeded::PerCaller {
                limit: self.per_caller,
            });
        }
        let overall =
            Arc::clone(&self.overall)
                .try_acquire_owned()
                .map_err(|_| LimitExceeded::Overall {
                    limit: self.overall_limit,
                })?;
        active.insert(caller.to_owned(), count + 1);
        Ok(CallPermit {
            _overall: overall,
            key: caller.to_owned(),
            active: Arc::clone(&self.active),
        })
    }

    /// Calls in flight now (all callers).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.overall_limit - self.overall.available_permits()
    }

    /// Callers with calls in flight now.
    #[must_use]
    pub fn callers(&self) -> usize {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_caller_and_overall_bounds_hold_and_permits_come_back() {
        let limiter = Limiter::new(5, 2);
        let a1 = limiter.try_acquire("a").expect("a 1");
        let a2 = limiter.try_acquire("a").expect("a 2");
        assert_eq!(
            limiter.try_acquire("a").expect_err("a 3"),
            LimitExceeded::PerCaller { limit: 2 }
        );
        let b: Vec<_> = (0..2)
            .map(|_| limiter.try_acquire("b").expect("b"))
            .collect();
        let c = limiter.try_acquire("c").expect("c 1");
        assert_eq!(limiter.in_flight(), 5);
        assert_eq!(
            limiter.try_acquire("d").expect_err("overall"),
            LimitExceeded::Overall { limit: 5 }
        );
        // A refusal takes no place: the caller map holds only callers in flight.
        assert_eq!(limiter.callers(), 3);
        drop(a1);
        assert_eq!(limiter.in_flight(), 4);
        let d = limiter.try_acquire("d").expect("a place came back");
        drop((a2, b, c, d));
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.callers(), 0, "no caller is remembered once idle");
        // A caller refused for its own bound does not use an overall place.
        let limiter = Limiter::new(3, 1);
        let _x = limiter.try_acquire("x").expect("x");
        for _ in 0..10 {
            limiter.try_acquire("x").expect_err("x again");
        }
        assert_eq!(limiter.in_flight(), 1);
    }

    #[test]
    fn permits_are_released_across_threads() {
        let limiter = Limiter::new(64, 64);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let permit = limiter.try_acquire(&format!("caller-{}", i % 3));
                        drop(permit);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("thread");
        }
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.callers(), 0);
    }

    #[test]
    fn settings_are_validated() {
        LimitSettings::default().validate().expect("defaults valid");
        let zero = LimitSettings {
            call_timeout_secs: 0,
            ..LimitSettings::default()
        };
        assert!(
            format!("{:#}", zero.validate().expect_err("zero"))
                .contains("server.limits.call_timeout_secs")
        );
        let inverted = LimitSettings {
            max_concurrent_calls: 4,
            max_concurrent_calls_per_caller: 8,
            ..LimitSettings::default()
        };
        assert!(inverted.validate().is_err());
    }
}

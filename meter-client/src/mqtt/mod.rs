//! A live source: a meter's readings from an MQTT broker (`meter-client run --source
//! mqtt://HOST:PORT --mqtt-topic TOPIC --mqtt-format tasmota|dsmr`).
//!
//! ```text
//! broker ──QoS 1──► parse (tasmota | dsmr) ──► commit to mqtt_inbox ──► PUBACK
//!                        └ malformed: log, count, PUBACK (never stored)
//! mqtt_inbox ──► quarter-hour register differences ──► complete windows ──► the batches of
//!                                                       every other source (crate::batch)
//! ```
//!
//! # Nothing received is lost
//!
//! The client subscribes with QoS 1 in a persistent session (`clean_session = false`, client
//! id `seer-meter-<METER_ID>`, stable across restarts) with manual acknowledgements: each
//! message is parsed, its sample is **committed** to the state database's `mqtt_inbox`
//! ([`inbox`]; WAL, `synchronous = FULL`), and only then is the `PUBACK` queued. A crash before
//! the commit leaves the message unacknowledged, and the broker redelivers it when the meter
//! reconnects; a crash after the commit and before the `PUBACK` gets it redelivered too, and the
//! inbox's primary key (topic, payload time) makes the redelivery a no-op (counted as a
//! duplicate). Messages published while the meter is down are queued by the broker for the
//! session (Mosquitto: `max_queued_messages`, 1000 by default — `scripts/mosquitto.sh` raises
//! it). A malformed payload is logged with its topic and reason, counted (`mqtt_counters`) and
//! acknowledged, so that a poison message never blocks the ones behind it.
//!
//! # From registers to readings
//!
//! Both formats carry a cumulative import register ([`payload`]), kept exactly in units of
//! 0.01 Wh. Readings are derived from the inbox on the 15-minute grid ([`readings::derive`]):
//!
//! - the register **at boundary** `b` is that of the *first* sample received with a time in
//!   `[b, b + 15 min)` (with Tasmota's default `TelePeriod` of 300 s that sample is at most
//!   5 minutes late, and the energy of those minutes is counted in the following interval:
//!   nothing is lost, the total over any run of intervals is the register difference);
//! - the reading of `[b, b + 15 min)` is the register at `b + 15 min` minus the register at
//!   `b`, in whole joules (0.01 Wh = 36 J);
//! - **a gap** — a quarter hour without any sample — skips the intervals on either side of
//!   the missing boundary (nothing is invented, as the file sources skip incomplete intervals);
//!   the energy of the gap is not billed;
//! - **a reset** — a register lower than the previous boundary's (a replaced meter, a
//!   Tasmota `EnergyReset`) — skips that one interval, logs a warning, and counting restarts
//!   from the new register: energy is never negative.
//!
//! # When batches are cut
//!
//! Live readings arrive over time, so a batch window (`--batch-days`; never across a month,
//! see [`crate::batch`]) is cut only when it is **complete**: when the inbox holds a sample
//! at or after the window's end. That sample is also what fixes the register at the window's
//! last boundary, so the window's readings can no longer change. A month therefore closes when
//! the first sample of the next month arrives — the register at midnight is exactly what its
//! last interval needs, so no separate "close the period" marker exists. A sample that arrives
//! later than a window already cut is stored but changes no batch. A sample dated more than
//! [`MAX_CLOCK_AHEAD`] ahead of the meter's clock is refused as malformed (it would close
//! windows early).
//!
//! The run keeps consuming until SIGINT or SIGTERM; it then stops reading, and (with
//! `--utility`) sends what it queued before it exits.
//!
//! # Transport
//!
//! Plaintext MQTT (`mqtt://`) only, and only to a loopback broker unless
//! `--mqtt-allow-plaintext` is given: the readings are the household's own data. TLS to the
//! broker (`mqtts://`) is not built yet.

pub mod inbox;
pub mod live;
pub mod payload;
pub mod readings;

use std::fmt;
use std::net::IpAddr;

use chrono::TimeDelta;

pub use live::{IngestReport, LiveFeed};
pub use payload::{Format, Malformed, Register, Sample};

use crate::error::Error;

/// How far ahead of the meter's clock (UTC, so that any local offset fits) a payload's time
/// may lie.
pub const MAX_CLOCK_AHEAD: TimeDelta = TimeDelta::days(2);

/// The default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;

/// A live MQTT source: where the broker is, what to subscribe to and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSource {
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// The topic subscribed to (QoS 1): a full topic (`tele/plug1/SENSOR`, `dsmr/json`);
    /// for Tasmota a bare device topic `plug1` means `tele/plug1/SENSOR`. Empty until set.
    pub topic: String,
    /// The payload format.
    pub format: Format,
    /// Whether plaintext MQTT to a broker that is not on loopback is allowed.
    pub allow_plaintext: bool,
}

impl MqttSource {
    /// Parses `mqtt://HOST[:PORT]` (topic unset, Tasmota format).
    ///
    /// # Errors
    /// [`Error::InvalidSource`] for another scheme (`mqtts://` is not supported yet), an empty
    /// host or a bad port.
    pub fn try_from_url(spec: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidSource {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if spec.starts_with("mqtts://") {
            return Err(invalid(
                "TLS to the broker (mqtts://) is not supported yet: use mqtt:// to a loopback \
                 broker",
            ));
        }
        let rest = spec
            .strip_prefix("mqtt://")
            .ok_or_else(|| invalid("expected mqtt://HOST[:PORT]"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal: [::1]:1883.
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
                host,
                port.parse()
                    .map_err(|_| invalid("PORT is not a number from 1 to 65535"))?,
            ),
            _ => (rest, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(invalid("expected mqtt://HOST[:PORT]"));
        }
        if port == 0 {
            return Err(invalid("PORT is not a number from 1 to 65535"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            topic: String::new(),
            format: Format::Tasmota,
            allow_plaintext: false,
        })
    }

    /// This source reading `topic` in `format`.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for an empty topic or one with MQTT wildcards (one topic is
    /// one meter), or plaintext to a broker off loopback without `allow_plaintext`.
    pub fn try_with(
        mut self,
        topic: &str,
        format: Format,
        allow_plaintext: bool,
    ) -> Result<Self, Error> {
        let topic = topic.trim();
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(Error::InvalidSetting {
                setting: "mqtt topic",
                reason: format!("{topic:?}: one topic without wildcards (one meter) is needed"),
            });
        }
        self.topic = match format {
            Format::Tasmota if !topic.contains('/') => format!("tele/{topic}/SENSOR"),
            _ => topic.to_owned(),
        };
        self.format = format;
        self.allow_plaintext = allow_plaintext;
        if !self.is_loopback() && !allow_plaintext {
            return Err(Error::InvalidSetting {
                setting: "mqtt broker",
                reason: format!(
                    "{} is not a loopback address: readings would cross the network in \
                     plaintext (pass --mqtt-allow-plaintext to accept that)",
                    self.host
                ),
            });
        }
        Ok(self)
    }

    /// Whether the broker is on this machine.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The client id of `meter_id`'s persistent session.
    pub fn client_id(meter_id: &str) -> String {
        format!("seer-meter-{meter_id}")
    }
}

impl fmt::Display for MqttSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        let s = MqttSource::try_from_url("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1884));
        assert_eq!(s.to_string(), "mqtt://127.0.0.1:1884");
        let s = MqttSource::try_from_url("mqtt://localhost").unwrap();
        assert_eq!(s.port, DEFAULT_PORT);
        let s = MqttSource::try_from_url("mqtt://[::1]:1883").unwrap();
        assert_eq!(s.host, "::1");
        assert!(s.is_loopback());
        for bad in [
            "mqtts://x:8883",
            "http://x",
            "mqtt://",
            "mqtt://x:0",
            "mqtt://x:y",
        ] {
            assert!(MqttSource::try_from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topics_and_plaintext_are_checked() {
        let local = MqttSource::try_from_url("mqtt://127.0.0.1").unwrap();
        let s = local
            .clone()
            .try_with("plug1", Format::Tasmota, false)
            .unwrap();
        assert_eq!(s.topic, "tele/plug1/SENSOR");
        let s = local
            .clone()
            .try_with("dsmr/json", Format::Dsmr, false)
            .unwrap();
        assert_eq!(s.topic, "dsmr/json");
        assert!(
            local
                .clone()
                .try_with("tele/+/SENSOR", Format::Tasmota, false)
                .is_err()
        );
        assert!(local.try_with("", Format::Dsmr, false).is_err());
        let remote = MqttSource::try_from_url("mqtt://broker.example:1883").unwrap();
        let err = remote
            .clone()
            .try_with("x/y", Format::Dsmr, false)
            .unwrap_err();
        assert!(err.to_string().contains("plaintext"), "{err}");
        assert!(remote.try_with("x/y", Format::Dsmr, true).is_ok());
    }
}

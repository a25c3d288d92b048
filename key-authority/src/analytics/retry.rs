//! Exact retries of `daily` releases.
//!
//! The utility's worker may die between the key authority's commit and its own store of the
//! answer (or two workers may run one job after a lease expired). The home-day is then released
//! at the key authority and unknown at the utility; asking again would be refused as already
//! released, and the home-day lost. So each granted `daily` home-day keeps a copy of what left,
//! in the release transaction (`daily_release_copies`), and a request that is an *exact* retry
//! — same meter, day, receipt input id, model and input ciphertexts (the granted entry's input
//! digest) — is answered from the copy: a `daily.retry` audit entry, no circuit, nothing
//! decrypted again, and the original granting entry's sequence in the answer. Anything else
//! for a released home-day is refused as before.
//!
//! The copy's floats are stored as their IEEE-754 bits, so a retried answer is bit for bit the
//! first one.

use chrono::Utc;
use seer_daily::release::{AnomalyRelease, DailyRelease, ExplanationItem};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use super::engine::DailyReleased;
use crate::audit::{InputDigest, RequestKind};
use crate::release::ReleaseError;

/// The audit kind of an answered retry (granted; kept apart from the `daily` grants, which
/// stay one per released meter-day).
pub(super) fn retry_kind() -> RequestKind {
    #[expect(clippy::expect_used, reason = "a constant, valid kind name")]
    RequestKind::try_new("daily.retry").expect("valid kind")
}

/// A stored copy of a released home-day.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct DailyCopy {
    /// What was released.
    pub released: DailyReleased,
    /// The `daily` entry that granted it.
    pub audit_sequence: u64,
}

/// What identifies an exact retry.
#[derive(Clone, Copy, Debug)]
pub(super) struct RetryKey<'a> {
    pub meter_id: &'a str,
    pub period: &'a str,
    pub input_id: &'a str,
    pub model_blake3: &'a str,
    pub input_digest: &'a InputDigest,
}

#[derive(Serialize, Deserialize)]
struct StoredItem {
    feature: String,
    hours: Vec<u32>,
    usual_low: u64,
    usual_high: u64,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct StoredAnomaly {
    score: u64,
    flagged: bool,
    explanation: Vec<StoredItem>,
}

#[derive(Serialize, Deserialize)]
struct StoredDaily {
    day: String,
    forecast: Option<Vec<u64>>,
    anomaly: Option<StoredAnomaly>,
    explanation_scores: Vec<u64>,
}

fn encode(released: &DailyReleased) -> Result<String, ReleaseError> {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
    let r = &released.release;
    let stored = StoredDaily {
        day: r.day.to_string(),
        forecast: r.forecast.as_deref().map(bits),
        anomaly: r.anomaly.as_ref().map(|a| StoredAnomaly {
            score: a.score.to_bits(),
            flagged: a.flagged,
            explanation: a
                .explanation
                .iter()
                .map(|e| StoredItem {
                    feature: e.feature.clone(),
                    hours: e.hours.clone(),
                    usual_low: e.usual_low.to_bits(),
                    usual_high: e.usual_high.to_bits(),
                    text: e.text.clone(),
                })
                .collect(),
        }),
        explanation_scores: bits(&released.explanation_scores),
    };
    serde_json::to_string(&stored)
        .map_err(|e| ReleaseError::Engine(format!("encoding a daily release copy: {e}")))
}

fn decode(text: &str) -> Result<DailyReleased, ReleaseError> {
    let corrupt = |detail: String| {
        ReleaseError::Engine(format!("a stored daily release copy is corrupt: {detail}"))
    };
    let stored: StoredDaily = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let floats = |v: Vec<u64>| v.into_iter().map(f64::from_bits).collect::<Vec<f64>>();
    Ok(DailyReleased {
        release: DailyRelease {
            day: stored
                .day
                .parse()
                .map_err(|e: chrono::ParseError| corrupt(e.to_string()))?,
            forecast: stored.forecast.map(floats),
            anomaly: stored.anomaly.map(|a| AnomalyRelease {
                score: f64::from_bits(a.score),
                flagged: a.flagged,
                explanation: a
                    .explanation
                    .into_iter()
                    .map(|e| ExplanationItem {
                        feature: e.feature,
                        hours: e.hours,
                        usual_low: f64::from_bits(e.usual_low),
                        usual_high: f64::from_bits(e.usual_high),
                        text: e.text,
                    })
                    .collect(),
            }),
        },
        explanation_scores: floats(stored.explanation_scores),
    })
}

/// Stores the copy of a granted home-day, inside the release transaction (`conn`).
///
/// # Errors
/// When the copy cannot be encoded or written (the transaction then rolls back).
pub(super) async fn store_copy(
    conn: &mut AnyConnection,
    key: RetryKey<'_>,
    released: &DailyReleased,
    audit_sequence: u64,
) -> Result<(), ReleaseError> {
    sqlx::query(
        "INSERT INTO daily_release_copies (meter_id, period, input_id, model_blake3, \
         input_digest, released, audit_seq, released_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key.meter_id.to_owned())
    .bind(key.period.to_owned())
    .bind(key.input_id.to_owned())
    .bind(key.model_blake3.to_owned())
    .bind(key.input_digest.to_string())
    .bind(encode(released)?)
    .bind(i64::try_from(audit_sequence).unwrap_or(i64::MAX))
    .bind(Utc::now().timestamp_micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// The stored copy for `key` when the request is its exact retry: the copy of (meter, period)
/// exists with the same input id, model and input digest, and its granting `daily` entry is
/// in the chain with this meter, period and digest (a row written outside the key authority
/// answers nothing).
///
/// # Errors
/// When the database cannot be read or the copy is corrupt.
pub(super) async fn exact_copy(
    conn: &mut AnyConnection,
    key: RetryKey<'_>,
) -> Result<Option<DailyCopy>, ReleaseError> {
    let row: Option<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT input_id, model_blake3, input_digest, released, audit_seq \
         FROM daily_release_copies WHERE meter_id = $1 AND period = $2",
    )
    .bind(key.meter_id.to_owned())
    .bind(key.period.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((input_id, model, digest, released, audit_seq)) = row else {
        return Ok(None);
    };
    if input_id != key.input_id
        || model != key.model_blake3
        || digest != key.input_digest.to_string()
    {
        return Ok(None);
    }
    let granted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_entries WHERE seq = $1 AND request_kind = 'daily' \
         AND decision = 'granted' AND meter_id = $2 AND input_digest = $3",
    )
    .bind(audit_seq)
    .bind(key.meter_id.to_owned())
    .bind(digest)
    .fetch_one(&mut *conn)
    .await?;
    if granted != 1 {
        tracing::error!(
            meter_id = key.meter_id,
            period = key.period,
            audit_seq,
            "a daily release copy without its granted entry"
        );
        return Ok(None);
    }
    Ok(Some(DailyCopy {
        released: decode(&released)?,
        audit_sequence: u64::try_from(audit_seq).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_round_trip_bit_for_bit() {
        let released = DailyReleased {
            release: DailyRelease {
                day: "2027-01-31".parse().expect("day"),
                forecast: Some((0..24).map(|h| f64::from(h) * 0.1 + 1e-9).collect()),
                anomaly: Some(AnomalyRelease {
                    score: 0.1 + 0.2,
                    flagged: true,
                    explanation: vec![ExplanationItem {
                        feature: "night_load".into(),
                        hours: vec![1, 2, 3],
                        usual_low: 2.5,
                        usual_high: f64::INFINITY,
                        text: "01:00–04:00 used ≥2.5× its usual energy".into(),
                    }],
                }),
            },
            explanation_scores: vec![1.0 / 3.0, -0.0],
        };
        let back = decode(&encode(&released).expect("encode")).expect("decode");
        assert_eq!(back, released);
        assert_eq!(
            back.explanation_scores[1].to_bits(),
            (-0.0_f64).to_bits(),
            "bits, not values"
        );
        assert!(decode("{\"day\":\"x\"}").is_err());
    }
}

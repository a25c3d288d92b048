//! Aggregated refusals: one audit entry standing for many refused calls of one window.
//!
//! A flood of refused calls must not grow the log without bound, so the key authority
//! records refusals without a valid token (and authenticated refusals beyond a per-caller
//! bound) only as counts, one entry of kind [`AGGREGATE_KIND`] per window. The entry is an
//! ordinary chained entry (so its hash, position and the head signature cover it): no caller,
//! meter, period or digest, decision `refused`, and as reason the canonical JSON of a
//! [`RefusalAggregate`] (keys in a fixed order, maps sorted), at most
//! [`MAX_AGGREGATE_LEN`] bytes. [`RefusalAggregate::check_entry`] is what both the key
//! authority's verification and `seer audit verify` apply to every such entry: the reason
//! parses and is canonical, the counts add up, the times are ordered and not after the entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The request kind of an aggregate entry.
pub const AGGREGATE_KIND: &str = "refusals.aggregate";
/// Longest canonical JSON of an aggregate (the audit log stores reasons up to 2048 bytes).
pub const MAX_AGGREGATE_LEN: usize = 2000;
/// Most distinct callers (and methods) listed by name; the rest are counted as `other_*`.
pub const MAX_LISTED: usize = 8;
/// Longest caller or method label, in bytes.
pub const MAX_LABEL_LEN: usize = 48;

/// The refusals of one window, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalAggregate {
    /// Format version (1).
    pub v: u32,
    /// Refused calls counted.
    pub count: u64,
    /// When the first counted refusal happened, microseconds since the Unix epoch.
    pub first_unix_micros: i64,
    /// When the last one happened.
    pub last_unix_micros: i64,
    /// Count per refusal class (`unauthenticated.missing`, `permission_denied.role`, ...).
    pub reasons: BTreeMap<String, u64>,
    /// Count per caller (`peer:<ip>` or `subject:<sub>`), the first [`MAX_LISTED`] seen.
    pub callers: BTreeMap<String, u64>,
    /// Refusals of callers not listed.
    pub other_callers: u64,
    /// Count per method path, the first [`MAX_LISTED`] seen.
    pub methods: BTreeMap<String, u64>,
    /// Refusals of methods not listed.
    pub other_methods: u64,
}

impl RefusalAggregate {
    /// An aggregate of one refusal.
    #[must_use]
    pub fn first(class: &str, caller: &str, method: &str, at_unix_micros: i64) -> Self {
        let mut aggregate = Self {
            v: 1,
            count: 0,
            first_unix_micros: at_unix_micros,
            last_unix_micros: at_unix_micros,
            reasons: BTreeMap::new(),
            callers: BTreeMap::new(),
            other_callers: 0,
            methods: BTreeMap::new(),
            other_methods: 0,
        };
        aggregate.add(class, caller, method, at_unix_micros, 1);
        aggregate
    }

    /// Counts `n` more refusals of `class` by `caller` on `method` at `at_unix_micros`.
    pub fn add(&mut self, class: &str, caller: &str, method: &str, at_unix_micros: i64, n: u64) {
        self.count += n;
        self.first_unix_micros = self.first_unix_micros.min(at_unix_micros);
        self.last_unix_micros = self.last_unix_micros.max(at_unix_micros);
        *self.reasons.entry(label(class)).or_default() += n;
        if !bump(&mut self.callers, &label(caller), n) {
            self.other_callers += n;
        }
        if !bump(&mut self.methods, &label(method), n) {
            self.other_methods += n;
        }
    }

    /// Adds `other`'s counts to this one (an aggregate that could not be written, carried
    /// into the next window).
    pub fn merge(&mut self, other: &RefusalAggregate) {
        self.count += other.count;
        self.first_unix_micros = self.first_unix_micros.min(other.first_unix_micros);
        self.last_unix_micros = self.last_unix_micros.max(other.last_unix_micros);
        for (class, n) in &other.reasons {
            *self.reasons.entry(class.clone()).or_default() += n;
        }
        for (caller, n) in &other.callers {
            if !bump(&mut self.callers, caller, *n) {
                self.other_callers += n;
            }
        }
        self.other_callers += other.other_callers;
        for (method, n) in &other.methods {
            if !bump(&mut self.methods, method, *n) {
                self.other_methods += n;
            }
        }
        self.other_methods += other.other_methods;
    }

    /// The canonical JSON stored as the entry's reason.
    #[must_use]
    pub fn to_reason(&self) -> String {
        // Serializing maps of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks an aggregate entry: `reason` is the canonical JSON of an aggregate
    /// whose counts add up, whose times are ordered and not after `recorded_at_micros`, and
    /// the entry names no caller, meter, period or digest.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn check_entry(
        recorded_at_micros: i64,
        has_caller: bool,
        has_scope: bool,
        reason: Option<&str>,
    ) -> Result<Self, String> {
        let reason = reason.ok_or("an aggregate entry must be a refusal")?;
        if has_caller || has_scope {
            return Err("an aggregate entry names no caller, meter, period or digest".into());
        }
        let aggregate: Self = serde_json::from_str(reason)
            .map_err(|e| format!("the aggregate's reason is not an aggregate: {e}"))?;
        if aggregate.to_reason() != reason {
            return Err("the aggregate's reason is not in canonical form".into());
        }
        if aggregate.v != 1 {
            return Err(format!("unknown aggregate version {}", aggregate.v));
        }
        if aggregate.count == 0 {
            return Err("the aggregate counts no refusal".into());
        }
        let sum = |map: &BTreeMap<String, u64>, other: u64| {
            map.values().try_fold(other, |acc, n| acc.checked_add(*n))
        };
        for (what, total) in [
            ("reasons", sum(&aggregate.reasons, 0)),
            ("callers", sum(&aggregate.callers, aggregate.other_callers)),
            ("methods", sum(&aggregate.methods, aggregate.other_methods)),
        ] {
            if total != Some(aggregate.count) {
                return Err(format!(
                    "the aggregate's {what} add up to {total:?}, not its count {}",
                    aggregate.count
                ));
            }
        }
        if aggregate.callers.len() > MAX_LISTED || aggregate.methods.len() > MAX_LISTED {
            return Err("the aggregate lists too many callers or methods".into());
        }
        if aggregate.first_unix_micros > aggregate.last_unix_micros
            || aggregate.last_unix_micros > recorded_at_micros
        {
            return Err("the aggregate's first, last and recorded times are out of order".into());
        }
        Ok(aggregate)
    }
}

/// Adds `n` to `key` when listed or when there is room to list it; `false` otherwise.
fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) -> bool {
    if let Some(count) = map.get_mut(key) {
        *count += n;
        true
    } else if map.len() < MAX_LISTED {
        map.insert(key.to_owned(), n);
        true
    } else {
        false
    }
}

/// A label as stored: characters outside `A-Za-z0-9 . _ - : / @` become `_`, cut to
/// [`MAX_LABEL_LEN`] bytes (so the JSON needs no escapes and stays bounded).
fn label(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_the_worst_case_fits() {
        let mut aggregate = RefusalAggregate::first("unauthenticated.missing", "peer:1", "/a/B", 5);
        for i in 0..100_u32 {
            aggregate.add(
                &format!("class-{}-{}", i % 7, "x".repeat(40)),
                &format!("subject:{}{i}", "é\"\n".repeat(40)),
                &format!("/{}{i}", "m".repeat(80)),
                i64::from(i),
                u64::from(i) + 1,
            );
        }
        assert_eq!(aggregate.count, 1 + (1..=100).sum::<u64>());
        assert_eq!(aggregate.first_unix_micros, 0);
        assert_eq!(aggregate.last_unix_micros, 99);
        let reason = aggregate.to_reason();
        assert!(reason.len() <= MAX_AGGREGATE_LEN, "{} bytes", reason.len());
        let checked = RefusalAggregate::check_entry(100, false, false, Some(&reason))
            .expect("a valid aggregate");
        assert_eq!(checked, aggregate);
    }

    #[test]
    fn merging_keeps_every_count() {
        let mut a = RefusalAggregate::first("x", "peer:1", "/m", 10);
        let mut b = RefusalAggregate::first("y", "peer:2", "/m", 5);
        for i in 0..20 {
            b.add("y", &format!("peer:{i}"), "/n", 20, 2);
        }
        a.merge(&b);
        assert_eq!(a.count, 1 + 1 + 40);
        assert_eq!((a.first_unix_micros, a.last_unix_micros), (5, 20));
        RefusalAggregate::check_entry(20, false, false, Some(&a.to_reason())).expect("valid");
    }

    #[test]
    fn altered_or_inconsistent_aggregates_are_refused() {
        let aggregate = RefusalAggregate::first("unauthenticated.missing", "peer:1", "/a/B", 5);
        let reason = aggregate.to_reason();
        let check = |at, caller, scope, reason: &str| {
            RefusalAggregate::check_entry(at, caller, scope, Some(reason))
        };
        check(5, false, false, &reason).expect("valid");
        assert!(
            check(4, false, false, &reason).is_err(),
            "recorded before its refusals"
        );
        assert!(check(5, true, false, &reason).is_err(), "with a caller");
        assert!(check(5, false, true, &reason).is_err(), "with a meter");
        assert!(RefusalAggregate::check_entry(5, false, false, None).is_err());
        let inflated = reason.replace("\"count\":1", "\"count\":2");
        assert!(
            check(5, false, false, &inflated).is_err(),
            "counts do not add up"
        );
        let spaced = reason.replace(",", ", ");
        assert!(check(5, false, false, &spaced).is_err(), "not canonical");
        assert!(check(5, false, false, "{}").is_err());
        assert!(check(5, false, false, "refused").is_err());
    }
}

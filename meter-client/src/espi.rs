//! Green Button "Download My Data": a household's interval readings as an ESPI (NAESB REQ.21)
//! Atom feed.
//!
//! The feed has four entries, linked as ESPI expects (`related` links from the usage point to
//! its meter reading, from the meter reading to its reading type and interval blocks):
//! - `UsagePoint` — electricity (`ServiceCategory/kind` 0);
//! - `MeterReading` — the meter's readings;
//! - `ReadingType` — real energy (`kind` 12) delivered (`flowDirection` 1), `uom` 72 (Wh),
//!   `powerOfTenMultiplier` 0, `intervalLength` in seconds, `accumulationBehaviour` 4
//!   (delta data: each value is the energy of its own interval);
//! - `IntervalBlock` — one per local calendar day, each `IntervalReading` with its
//!   `timePeriod` (start as Unix seconds UTC, duration in seconds) and `value` in Wh.
//!
//! The schema (`espiDerived.xsd` with `atom.xsd`, from the Green Button Alliance's
//! OpenESPI-Common-java repository) is committed in `meter-client/schema/espi/`, and
//! `meter-client/tests/espi.rs` validates a feed against it with `xmllint`.

use std::fmt::Write as _;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, Offset as _, TimeZone as _, Utc};

use crate::batch::QueuedReading;
use crate::error::Error;

/// The ESPI namespace.
pub const ESPI_NS: &str = "http://naesb.org/espi";
/// The Atom namespace.
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
/// ESPI's unit of measure code for watt-hours.
pub const UOM_WH: u32 = 72;

/// What an export covers besides its readings.
#[derive(Clone, Debug)]
pub struct Export<'a> {
    /// The meter's id (it names the feed's resources).
    pub meter_id: &'a str,
    /// The meter's offset from UTC (its readings are local wall-clock times).
    pub utc_offset: FixedOffset,
    /// When the feed was produced.
    pub updated: NaiveDateTime,
}

/// The feed for `readings` (in time order, one interval length), as XML text.
///
/// # Errors
/// [`Error::InvalidSetting`] when the readings mix interval lengths or are out of order.
pub fn feed(export: &Export<'_>, readings: &[QueuedReading]) -> Result<String, Error> {
    let refuse = |reason: String| Error::InvalidSetting {
        setting: "espi export",
        reason,
    };
    let interval = readings.first().map_or(900, |r| r.interval_s);
    if let Some(r) = readings.iter().find(|r| r.interval_s != interval) {
        return Err(refuse(format!(
            "reading at {} is {} s long, the others {interval} s",
            r.start, r.interval_s
        )));
    }
    if readings.windows(2).any(|w| w[1].start <= w[0].start) {
        return Err(refuse("readings out of order".to_owned()));
    }
    let id = xml_text(export.meter_id);
    let base = format!("/espi/1_1/resource/Subscription/1/UsagePoint/{id}");
    let updated = rfc3339(export.updated);
    let uuid = |kind: &str, n: u64| uuid_of(export.meter_id, kind, n);
    let mut x = String::with_capacity(256 + readings.len() * 160);
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <feed xmlns=\"{ATOM_NS}\" xmlns:espi=\"{ESPI_NS}\">\
         <id>urn:uuid:{feed_id}</id><title>SEER Green Button data for meter {id}</title>\
         <updated>{updated}</updated>\
         <link rel=\"self\" href=\"{base}/feed\"/>",
        feed_id = uuid("feed", 0),
    );
    // The usage point.
    entry(
        &mut x,
        &uuid("UsagePoint", 0),
        &format!("Meter {id}"),
        &updated,
        &base,
        &[("up", "/espi/1_1/resource/Subscription/1/UsagePoint")],
        &[("related", &format!("{base}/MeterReading"))],
        "<espi:UsagePoint><espi:ServiceCategory><espi:kind>0</espi:kind>\
         </espi:ServiceCategory></espi:UsagePoint>",
    );
    let reading_type = "/espi/1_1/resource/ReadingType/1".to_owned();
    let meter_reading = format!("{base}/MeterReading/1");
    entry(
        &mut x,
        &uuid("MeterReading", 1),
        "Interval readings",
        &updated,
        &meter_reading,
        &[("up", &format!("{base}/MeterReading"))],
        &[
            ("related", &format!("{meter_reading}/IntervalBlock")),
            ("related", &reading_type),
        ],
        "<espi:MeterReading/>",
    );
    entry(
        &mut x,
        &uuid("ReadingType", 1),
        "Energy delivered (Wh)",
        &updated,
        &reading_type,
        &[("up", "/espi/1_1/resource/ReadingType")],
        &[],
        &format!(
            "<espi:ReadingType><espi:accumulationBehaviour>4</espi:accumulationBehaviour>\
             <espi:commodity>1</espi:commodity><espi:dataQualifier>12</espi:dataQualifier>\
             <espi:flowDirection>1</espi:flowDirection>\
             <espi:intervalLength>{interval}</espi:intervalLength><espi:kind>12</espi:kind>\
             <espi:phase>769</espi:phase><espi:powerOfTenMultiplier>0</espi:powerOfTenMultiplier>\
             <espi:timeAttribute>0</espi:timeAttribute><espi:uom>{UOM_WH}</espi:uom>\
             </espi:ReadingType>"
        ),
    );
    // One interval block per local day.
    let mut days: Vec<(NaiveDate, &[QueuedReading])> = Vec::new();
    let mut rest = readings;
    while let Some(first) = rest.first() {
        let day = first.start.date();
        let n = rest.iter().take_while(|r| r.start.date() == day).count();
        days.push((day, &rest[..n]));
        rest = &rest[n..];
    }
    for (n, (day, day_readings)) in days.iter().enumerate() {
        let block = format!("{meter_reading}/IntervalBlock/{}", n + 1);
        let start = unix(export.utc_offset, day_readings[0].start);
        let end = day_readings.last().map_or(start, |r| {
            unix(export.utc_offset, r.start) + i64::from(interval)
        });
        let mut content = format!(
            "<espi:IntervalBlock><espi:interval><espi:duration>{}</espi:duration>\
             <espi:start>{start}</espi:start></espi:interval>",
            end - start
        );
        for r in *day_readings {
            let _ = write!(
                content,
                "<espi:IntervalReading><espi:timePeriod><espi:duration>{interval}</espi:duration>\
                 <espi:start>{}</espi:start></espi:timePeriod><espi:value>{}</espi:value>\
                 </espi:IntervalReading>",
                unix(export.utc_offset, r.start),
                r.energy.get()
            );
        }
        content.push_str("</espi:IntervalBlock>");
        entry(
            &mut x,
            &uuid("IntervalBlock", n as u64 + 1),
            &format!("Readings of {day}"),
            &updated,
            &block,
            &[("up", &format!("{meter_reading}/IntervalBlock"))],
            &[],
            &content,
        );
    }
    x.push_str("</feed>\n");
    Ok(x)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one Atom entry's parts, all plain text"
)]
fn entry(
    x: &mut String,
    uuid: &str,
    title: &str,
    updated: &str,
    self_href: &str,
    up: &[(&str, &str)],
    related: &[(&str, &str)],
    content: &str,
) {
    let _ = write!(
        x,
        "<entry><id>urn:uuid:{uuid}</id><title>{}</title><published>{updated}</published>\
         <updated>{updated}</updated><link rel=\"self\" href=\"{}\"/>",
        xml_text(title),
        xml_text(self_href)
    );
    for (rel, href) in up.iter().chain(related) {
        let _ = write!(x, "<link rel=\"{rel}\" href=\"{}\"/>", xml_text(href));
    }
    let _ = write!(x, "<content type=\"xml\">{content}</content></entry>");
}

/// Unix seconds (UTC) of the local wall-clock time `t` at `offset`.
fn unix(offset: FixedOffset, t: NaiveDateTime) -> i64 {
    offset
        .from_local_datetime(&t)
        .single()
        .map_or_else(|| t.and_utc().timestamp(), |d| d.timestamp())
}

fn rfc3339(t: NaiveDateTime) -> String {
    Utc.fix()
        .from_utc_datetime(&t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A stable name-based UUID (the BLAKE3 of the meter, kind and number, shaped as a version-5
/// style UUID), so that the same export names the same resources.
fn uuid_of(meter: &str, kind: &str, n: u64) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"SEER-ESPI-v1\0");
    h.update(meter.as_bytes());
    h.update(b"\0");
    h.update(kind.as_bytes());
    h.update(&n.to_le_bytes());
    let b = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&b.as_bytes()[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `text` escaped for XML element content and attribute values.
fn xml_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use seer_core::units::Wh;

    use super::*;

    fn readings() -> Vec<QueuedReading> {
        let start = NaiveDate::from_ymd_opt(2010, 1, 31)
            .unwrap()
            .and_hms_opt(23, 30, 0)
            .unwrap();
        (0..4)
            .map(|i| QueuedReading {
                start: start + TimeDelta::minutes(15 * i),
                energy: Wh::try_new(100 + i).unwrap(),
                interval_s: 900,
                analytics: None,
                sequence: 1,
            })
            .collect()
    }

    fn export() -> Export<'static> {
        Export {
            meter_id: "meter-7",
            utc_offset: FixedOffset::east_opt(5 * 3600 + 1800).unwrap(),
            updated: NaiveDate::from_ymd_opt(2010, 2, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
        }
    }

    #[test]
    fn values_times_and_blocks_are_those_of_the_readings() {
        let xml = feed(&export(), &readings()).unwrap();
        // Two local days → two interval blocks; values in Wh.
        assert_eq!(xml.matches("<espi:IntervalBlock>").count(), 2);
        for v in 100..104 {
            assert!(xml.contains(&format!("<espi:value>{v}</espi:value>")));
        }
        // 2010-01-31 23:30 at +05:30 is 18:00 UTC: 1264960800.
        assert!(xml.contains("<espi:start>1264960800</espi:start>"));
        assert!(xml.contains("<espi:uom>72</espi:uom>"));
        assert!(xml.contains("<espi:intervalLength>900</espi:intervalLength>"));
        // Stable names.
        assert_eq!(xml, feed(&export(), &readings()).unwrap());
    }

    #[test]
    fn refuses_mixed_intervals_and_disorder() {
        let mut r = readings();
        r[2].interval_s = 3600;
        assert!(feed(&export(), &r).is_err());
        let mut r = readings();
        r.swap(0, 1);
        assert!(feed(&export(), &r).is_err());
    }

    #[test]
    fn escapes_the_meter_id() {
        let mut e = export();
        e.meter_id = "a<b&c";
        let xml = feed(&e, &readings()).unwrap();
        assert!(xml.contains("a&lt;b&amp;c"));
        assert!(!xml.contains("a<b"));
    }
}

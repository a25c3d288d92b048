//! What a run prints: each home's released bill beside its plaintext twin, each billing
//! group's released hourly totals of the noised analytics lane against the plaintext hourly
//! sums, the bytes the meters sent per reading, and the time of each phase; as a table or as
//! JSON (`--json`).

use std::io::Write;

use serde::{Deserialize, Serialize};

/// The largest difference, in paise, between a released bill and its plaintext twin that
/// counts as equal (₹0.005).
pub const TOLERANCE_PAISE: f64 = 0.5;

/// One home's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HomeReport {
    /// The home's number in the deployment (its billing block).
    pub index: u64,
    /// Its meter id.
    pub meter_id: String,
    /// Where its readings come from, in words.
    pub label: String,
    /// The meter's `--source`.
    pub source: String,
    /// The meter's `--replay-as`, if any.
    pub replay_as: Option<String>,
    /// 15-minute readings the meter encrypted.
    pub readings: usize,
    /// Intervals skipped for missing source minutes.
    pub skipped_intervals: usize,
    /// Batches the meter sent.
    pub batches: u64,
    /// Billing-lane ciphertext bytes the meter sent.
    pub billing_bytes: u64,
    /// Analytics-lane ciphertext bytes the meter sent.
    pub analytics_bytes: u64,
    /// The plaintext bill, paise (computed by the launcher from the same readings).
    pub plaintext_paise: i64,
    /// The plaintext energy per slab, Wh.
    pub plaintext_wh_per_slab: Vec<i64>,
    /// The bill the key authority released, paise; `None` when refused or missing.
    pub released_paise: Option<i64>,
    /// The released energy per slab, Wh, when the release reports it.
    pub released_wh_per_slab: Option<Vec<i64>>,
    /// The key authority's reason, when it refused the bill.
    pub refused: Option<String>,
    /// Released minus plaintext, paise.
    pub difference_paise: Option<i64>,
    /// Whether the released bill is within [`TOLERANCE_PAISE`] of the plaintext one.
    pub matches: bool,
    /// Whether the released energy per slab equals the plaintext one (when released).
    pub slabs_match: Option<bool>,
}

/// The bytes the meters sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BytesReport {
    /// Readings sent, all homes.
    pub readings: u64,
    /// Batches sent, all homes.
    pub batches: u64,
    /// Billing-lane bytes, all homes.
    pub billing_bytes: u64,
    /// Analytics-lane bytes, all homes.
    pub analytics_bytes: u64,
    /// Days per batch the meters used.
    pub batch_days: u32,
}

impl BytesReport {
    /// Billing-lane bytes per reading.
    pub fn billing_per_reading(&self) -> f64 {
        per(self.billing_bytes, self.readings)
    }

    /// Analytics-lane bytes per reading.
    pub fn analytics_per_reading(&self) -> f64 {
        per(self.analytics_bytes, self.readings)
    }

    /// Both lanes' bytes per reading.
    pub fn per_reading(&self) -> f64 {
        per(self.billing_bytes + self.analytics_bytes, self.readings)
    }
}

fn per(bytes: u64, readings: u64) -> f64 {
    if readings == 0 {
        0.0
    } else {
        bytes as f64 / readings as f64
    }
}

/// One billing group's hourly totals of the analytics lane, as the key authority released them
/// (see [`crate::group_totals`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupTotalsSummary {
    /// The billing (and noise) group.
    pub group: u64,
    /// The run's homes in it.
    pub homes: usize,
    /// Batch windows asked for.
    pub windows: usize,
    /// The plan's group size n (`null` when no batch carried a plan).
    pub group_size: Option<u32>,
    /// The plan's tolerated absent or colluding meters t.
    pub tolerated: Option<u32>,
    /// The plan's clamp Δ, Wh per reading.
    pub sensitivity_wh: Option<i64>,
    /// The plan's ε per reading.
    pub epsilon: Option<f64>,
    /// The scale b = Δ/ε of each interval's draw, Wh (from a released hour).
    pub noise_scale_wh: Option<f64>,
    /// Meters that must be present in every interval of an hour for its release:
    /// max(⌈(n − t)/2⌉, 3).
    pub presence_floor: Option<u32>,
    /// Hours answered.
    pub hours: usize,
    /// Hours released (now or by an earlier request).
    pub released: usize,
    /// Hours withheld for too few meters present.
    pub withheld: usize,
    /// The most meters present throughout an hour, over the hours answered.
    pub most_present: u32,
    /// Mean of (released − plaintext) over the released hours, kWh.
    pub mean_error_kwh: Option<f64>,
    /// Root mean square of (released − plaintext) over the released hours, kWh.
    pub rms_error_kwh: Option<f64>,
    /// The expected standard deviation of one hour's noise with the whole group present, kWh:
    /// 2·√2·b·√(n/(n − t)) for 15-minute readings
    /// ([`expected_hour_variance`](crate::group_totals::expected_hour_variance)).
    pub expected_sigma_kwh: Option<f64>,
    /// Mean plaintext load of the group over the released hours, kWh per hour.
    pub mean_hourly_load_kwh: Option<f64>,
    /// Inputs the key authority left out of the sums, with its reasons.
    pub refused_inputs: Vec<String>,
    /// Hours the utility could not record or compare as answered.
    pub conflicts: Vec<String>,
}

/// One phase's wall-clock time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// What it did.
    pub name: String,
    /// Its wall-clock time, milliseconds.
    pub millis: f64,
}

/// How a server ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerExit {
    /// The program.
    pub name: String,
    /// Whether it exited with status 0 after SIGTERM.
    pub clean: bool,
    /// Its exit status or the failure to stop it, in words.
    pub status: String,
    /// Its log file.
    pub log: String,
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The billing period.
    pub period: String,
    /// The tariff's name.
    pub tariff: String,
    /// The slabs, as labels (e.g. "0–50 kWh").
    pub slab_labels: Vec<String>,
    /// The homes, in index order.
    pub homes: Vec<HomeReport>,
    /// The bytes the meters sent.
    pub bytes: BytesReport,
    /// The packing groups billed (one ciphertext per group).
    pub groups: Vec<u64>,
    /// Homes per packing group (ciphertext) for this tariff.
    pub homes_per_group: u64,
    /// Each billing group's released hourly totals of the analytics lane.
    #[serde(default)]
    pub group_totals: Vec<GroupTotalsSummary>,
    /// Wall-clock time per phase, in order.
    pub phases: Vec<Phase>,
    /// How the servers ended.
    pub servers: Vec<ServerExit>,
    /// The work directory (state, databases, keys, logs).
    pub workdir: String,
}

impl RunReport {
    /// Whether every home's released bill matches its plaintext twin.
    pub fn all_match(&self) -> bool {
        !self.homes.is_empty() && self.homes.iter().all(|h| h.matches)
    }

    /// The total wall-clock time of the phases, milliseconds.
    pub fn total_millis(&self) -> f64 {
        self.phases.iter().map(|p| p.millis).sum()
    }
}

/// Formats paise as rupees: `₹1,234.56` (`-₹0.01` when negative).
pub fn rupees(paise: i64) -> String {
    let sign = if paise < 0 { "-" } else { "" };
    let abs = paise.unsigned_abs();
    format!("{sign}₹{}.{:02}", group_digits(abs / 100), abs % 100)
}

/// `1234567` → `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn kwh(wh: i64) -> String {
    format!("{:.3}", wh as f64 / 1000.0)
}

/// Prints the report as a table.
///
/// # Errors
/// When writing fails.
pub fn print_table(report: &RunReport, mut out: impl Write) -> std::io::Result<()> {
    let homes = report.homes.len();
    writeln!(
        out,
        "SEER: {homes} home{} billed for {} ({}) by three separate programs: a key authority, \
         a utility server and {homes} meter client{}",
        if homes == 1 { "" } else { "s" },
        report.period,
        report.tariff,
        if homes == 1 { "" } else { "s" },
    )?;
    writeln!(out)?;
    let label_width = report
        .homes
        .iter()
        .map(|h| h.label.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let slab_header = format!("kWh per slab ({})", report.slab_labels.join(" | "));
    let slab_cells: Vec<String> = report
        .homes
        .iter()
        .map(|h| {
            let (values, mark) = match &h.released_wh_per_slab {
                Some(v) => (v.as_slice(), ""),
                None => (h.plaintext_wh_per_slab.as_slice(), "*"),
            };
            let text: Vec<String> = values.iter().map(|wh| kwh(*wh)).collect();
            format!("{}{mark}", text.join(" | "))
        })
        .collect();
    let slab_width = slab_cells
        .iter()
        .map(|c| c.chars().count())
        .chain([slab_header.chars().count()])
        .max()
        .unwrap_or(0);
    writeln!(
        out,
        "{:<7} {:<label_width$} {:>8}  {:<slab_width$}  {:>12} {:>12} {:>10}",
        "meter", "source", "readings", slab_header, "released", "plaintext", "difference"
    )?;
    let mut released_total = 0;
    let mut plaintext_total = 0;
    for (h, slabs) in report.homes.iter().zip(&slab_cells) {
        plaintext_total += h.plaintext_paise;
        released_total += h.released_paise.unwrap_or(0);
        let released = match (&h.released_paise, &h.refused) {
            (Some(p), _) => rupees(*p),
            (None, Some(_)) => "refused".to_owned(),
            (None, None) => "missing".to_owned(),
        };
        let difference = h.difference_paise.map_or_else(|| "-".to_owned(), rupees);
        writeln!(
            out,
            "{:<7} {:<label_width$} {:>8}  {:<slab_width$}  {:>12} {:>12} {:>10}{}",
            h.meter_id,
            h.label,
            h.readings,
            slabs,
            released,
            rupees(h.plaintext_paise),
            difference,
            if h.matches { "" } else { "  MISMATCH" },
        )?;
    }
    writeln!(
        out,
        "{:<7} {:<label_width$} {:>8}  {:<slab_width$}  {:>12} {:>12} {:>10}",
        "total",
        "",
        report.homes.iter().map(|h| h.readings).sum::<usize>(),
        "",
        rupees(released_total),
        rupees(plaintext_total),
        rupees(released_total - plaintext_total),
    )?;
    writeln!(out)?;
    if slab_cells.iter().any(|c| c.ends_with('*')) {
        writeln!(
            out,
            "* the release does not report energy per slab: the plaintext split is shown"
        )?;
    }
    for h in &report.homes {
        if let Some(reason) = &h.refused {
            writeln!(
                out,
                "{}: refused by the key authority: {reason}",
                h.meter_id
            )?;
        }
        if h.slabs_match == Some(false) {
            writeln!(
                out,
                "{}: the released energy per slab differs from the plaintext split",
                h.meter_id
            )?;
        }
    }
    let b = &report.bytes;
    writeln!(
        out,
        "bytes sent per 15-minute reading, both lanes, averaged over the month: {} B \
         (billing {} B + analytics {} B; {} batches of up to {} day{} for {} readings, {} B \
         in all)",
        group_digits(b.per_reading().round() as u64),
        group_digits(b.billing_per_reading().round() as u64),
        group_digits(b.analytics_per_reading().round() as u64),
        b.batches,
        b.batch_days,
        if b.batch_days == 1 { "" } else { "s" },
        group_digits(b.readings),
        group_digits(b.billing_bytes + b.analytics_bytes),
    )?;
    writeln!(
        out,
        "packing: {} group{} of up to {} homes (one billing ciphertext per group), groups {:?}",
        report.groups.len(),
        if report.groups.len() == 1 { "" } else { "s" },
        report.homes_per_group,
        report.groups
    )?;
    for g in &report.group_totals {
        print_group_totals(g, &mut out)?;
    }
    let phases: Vec<String> = report
        .phases
        .iter()
        .map(|p| format!("{} {:.1} s", p.name, p.millis / 1e3))
        .collect();
    writeln!(
        out,
        "time: {}; total {:.1} s",
        phases.join(", "),
        report.total_millis() / 1e3
    )?;
    for s in &report.servers {
        writeln!(
            out,
            "{} stopped with SIGTERM: {} (log: {})",
            s.name, s.status, s.log
        )?;
    }
    writeln!(out, "work directory: {}", report.workdir)?;
    let mismatches = report.homes.iter().filter(|h| !h.matches).count();
    if mismatches == 0 && !report.homes.is_empty() {
        writeln!(
            out,
            "all {homes} released bills equal their plaintext twins (tolerance ₹0.005)"
        )?;
    } else {
        writeln!(
            out,
            "{mismatches} of {homes} bills were refused, missing or differ from their \
             plaintext twins by more than ₹0.005"
        )?;
    }
    Ok(())
}

/// Prints one group's released hourly totals: what was released or withheld, then the error
/// against the plaintext hourly sums.
fn print_group_totals(g: &GroupTotalsSummary, out: &mut impl Write) -> std::io::Result<()> {
    let homes = format!("{} home{}", g.homes, if g.homes == 1 { "" } else { "s" });
    let (Some(n), Some(t), Some(delta), Some(epsilon)) =
        (g.group_size, g.tolerated, g.sensitivity_wh, g.epsilon)
    else {
        return writeln!(
            out,
            "group totals, group {} ({homes}): no batch carried a noise plan, nothing to release",
            g.group
        );
    };
    let b = g.noise_scale_wh.unwrap_or(delta as f64 / epsilon).round();
    write!(
        out,
        "group totals, group {} ({homes}; noise plan n = {n}, t = {t}, ε = {epsilon} per \
         reading, Δ = {delta} Wh, b = Δ/ε = {b} Wh): ",
        g.group
    )?;
    let floor = g
        .presence_floor
        .map_or_else(String::new, |f| format!(" (the presence floor is {f})"));
    if g.released == 0 {
        writeln!(
            out,
            "all {} hours withheld: at most {} meter{} present{floor}; nothing to compare",
            g.hours,
            g.most_present,
            if g.most_present == 1 { "" } else { "s" },
        )?;
    } else {
        writeln!(
            out,
            "{} of {} hours released, {} withheld{}",
            g.released,
            g.hours,
            g.withheld,
            if g.withheld > 0 {
                format!(" (an interval with too few meters present{floor})")
            } else {
                String::new()
            },
        )?;
        let kwh = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        writeln!(
            out,
            "group totals, group {}: released − plaintext hourly total (readings clamped to Δ): \
             mean {} kWh, RMS {} kWh (expected σ of one hour's noise 2·√2·b·√(n/(n−t)) = {} \
             kWh); mean hourly load {} kWh",
            g.group,
            g.mean_error_kwh
                .map_or_else(|| "-".to_owned(), |v| format!("{v:+.3}")),
            kwh(g.rms_error_kwh),
            kwh(g.expected_sigma_kwh),
            kwh(g.mean_hourly_load_kwh),
        )?;
    }
    if !g.refused_inputs.is_empty() {
        writeln!(
            out,
            "group totals, group {}: {} input{} refused by the key authority: {}",
            g.group,
            g.refused_inputs.len(),
            if g.refused_inputs.len() == 1 { "" } else { "s" },
            g.refused_inputs.join("; ")
        )?;
    }
    if !g.conflicts.is_empty() {
        writeln!(
            out,
            "group totals, group {}: {} conflict{}: {}",
            g.group,
            g.conflicts.len(),
            if g.conflicts.len() == 1 { "" } else { "s" },
            g.conflicts.join("; ")
        )?;
    }
    Ok(())
}

/// Prints where to look at a deployment `seer run --keep-running` left up: the dashboards'
/// addresses, the CA to trust, a token per role and the auditor's commands.
///
/// # Errors
/// When writing fails.
pub fn print_access(access: &crate::run::Access, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "SEER is running (Ctrl-C stops it).")?;
    writeln!(out)?;
    writeln!(
        out,
        "Utility dashboard:   {}   (log in with a token below)",
        access.utility_dashboard
    )?;
    match &access.household_dashboard {
        Some(url) => writeln!(
            out,
            "Household dashboard: {url}   (meter {}, this machine only)",
            access.household_meter
        )?,
        None => writeln!(out, "Household dashboard: did not start (see logs/)")?,
    }
    writeln!(
        out,
        "Deployment CA:       {}   (import it into the browser, or accept the certificate warning)",
        access.ca_file.display()
    )?;
    writeln!(out)?;
    writeln!(out, "Tokens (paste one into the login page):")?;
    for (role, token) in &access.tokens {
        writeln!(out, "  {role}:")?;
        writeln!(out, "    {token}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Auditor (verifies the key authority's log from its public key alone):"
    )?;
    let auditor = access
        .tokens
        .iter()
        .find(|(role, _)| role == "auditor")
        .map_or("AUDITOR_TOKEN", |(_, token)| token.as_str());
    let env: Vec<String> = access
        .auditor_env
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    for command in ["verify", "serve"] {
        writeln!(
            out,
            "  {} seer audit {command} --key-authority {} --token {auditor} --public-key {} \
             --public-key-sha256 {}",
            env.join(" "),
            access.key_authority,
            access.audit_public_key.display(),
            access.audit_public_key_sha256
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rupees_are_grouped_and_signed() {
        assert_eq!(rupees(0), "₹0.00");
        assert_eq!(rupees(5), "₹0.05");
        assert_eq!(rupees(123_456_789), "₹1,234,567.89");
        assert_eq!(rupees(-101), "-₹1.01");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
    }

    #[test]
    fn bytes_per_reading_divide_by_readings() {
        let b = BytesReport {
            readings: 4,
            batches: 2,
            billing_bytes: 10,
            analytics_bytes: 30,
            batch_days: 7,
        };
        assert!((b.per_reading() - 10.0).abs() < 1e-12);
        assert!((b.billing_per_reading() - 2.5).abs() < 1e-12);
        assert_eq!(BytesReport::default().per_reading(), 0.0);
    }

    fn printed(g: &GroupTotalsSummary) -> String {
        let mut out = Vec::new();
        print_group_totals(g, &mut out).expect("printed");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn group_totals_print_released_and_withheld_hours() {
        let planned = GroupTotalsSummary {
            group: 0,
            homes: 4,
            windows: 5,
            group_size: Some(4),
            tolerated: Some(0),
            sensitivity_wh: Some(3_450),
            epsilon: Some(1.0),
            noise_scale_wh: Some(3_450.0),
            presence_floor: Some(3),
            hours: 744,
            ..GroupTotalsSummary::default()
        };
        let released = printed(&GroupTotalsSummary {
            released: 740,
            withheld: 4,
            most_present: 4,
            mean_error_kwh: Some(-0.25),
            rms_error_kwh: Some(9.5),
            expected_sigma_kwh: Some(9.758),
            mean_hourly_load_kwh: Some(4.2),
            refused_inputs: vec!["M-0001 batch 2: a reason".into()],
            ..planned.clone()
        });
        assert!(
            released.contains("740 of 744 hours released, 4 withheld"),
            "{released}"
        );
        assert!(
            released.contains("mean -0.250 kWh, RMS 9.500 kWh"),
            "{released}"
        );
        assert!(released.contains("= 9.758 kWh); mean hourly load 4.200 kWh"));
        assert!(released.contains("1 input refused by the key authority: M-0001"));
        let withheld = printed(&GroupTotalsSummary {
            homes: 2,
            withheld: 744,
            most_present: 2,
            ..planned
        });
        assert!(
            withheld.contains(
                "all 744 hours withheld: at most 2 meters present (the presence floor is 3)"
            ),
            "{withheld}"
        );
        assert!(!withheld.contains("RMS"));
        let json = serde_json::to_value(GroupTotalsSummary::default()).expect("JSON");
        assert_eq!(json["rms_error_kwh"], serde_json::Value::Null);
    }
}

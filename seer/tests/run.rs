//! `seer run` end to end: the launcher starts the key authority, the utility server and a
//! meter client per home as separate processes, and its JSON report is checked against
//! oracles independent of the launcher: the committed UCI sample's January billed by hand from
//! the CSV text, and synthetic homes billed with the exact tariff.
//!
//! The programs must be built first, with the same profile
//! (`cargo build --release --workspace --bins`; `scripts/test.sh` does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use seer::RunReport;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/samples/uci-householdpower-sample.csv")
}

fn seer(args: &[&str], workdir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seer"))
        .arg("run")
        .args(args)
        .arg("--workdir")
        .arg(workdir)
        .output()
        .expect("seer runs")
}

/// BESCOM by hand: paise per kWh for 0–50, 50–100, 100–200 and above 200 kWh.
const SLABS: [(i64, i64); 4] = [(0, 415), (50_000, 560), (100_000, 715), (200_000, 820)];

/// The bill of `total_wh` for a month, in paise, rounded half up.
fn bescom_paise(total_wh: i64) -> i64 {
    // Exact amount in milli-paise: Wh × paise per kWh.
    let mut milli = 0;
    for (i, (from, rate)) in SLABS.iter().enumerate() {
        let to = SLABS.get(i + 1).map_or(i64::MAX, |s| s.0);
        let wh = total_wh.min(to) - from;
        if wh > 0 {
            milli += wh * rate;
        }
    }
    (milli + 500) / 1000
}

/// The sample's January by hand: one-minute kW with three decimals → joules (× 60 000 / 1000),
/// complete quarter hours only, whole Wh carried reading to reading as a meter's register
/// does, then the total.
fn sample_january_wh() -> (usize, i64) {
    let text = std::fs::read_to_string(sample()).expect("sample");
    let mut quarters: BTreeMap<String, (u32, i64)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if !fields[0].starts_with("2007-01") {
            continue;
        }
        let (whole, frac) = fields[1].split_once('.').unwrap_or((fields[1], "0"));
        assert!(frac.len() <= 3, "{line}");
        let milli_kw: i64 =
            whole.parse::<i64>().unwrap() * 1000 + format!("{frac:0<3}").parse::<i64>().unwrap();
        let minute: u32 = fields[0][14..16].parse().unwrap();
        let key = format!("{}{:02}", &fields[0][..14], minute / 15 * 15);
        let q = quarters.entry(key).or_default();
        q.0 += 1;
        q.1 += milli_kw * 60;
    }
    let mut remainder = 0;
    let mut total_wh = 0;
    let mut readings = 0;
    for (count, joules) in quarters.values() {
        if *count == 15 {
            readings += 1;
            remainder += joules;
            total_wh += remainder / 3600;
            remainder %= 3600;
        }
    }
    (readings, total_wh)
}

/// A synthetic home's January 2007 in whole Wh, from meter-client's generator.
fn synthetic_january_paise(seed: u64, home: u32) -> i64 {
    let from = chrono::NaiveDate::from_ymd_opt(2007, 1, 1).unwrap();
    let until = chrono::NaiveDate::from_ymd_opt(2007, 2, 1).unwrap();
    let total: i64 = meter_client::synthetic::SyntheticHome::new(seed, home)
        .readings(from, until)
        .iter()
        .map(|r| r.energy.round_to_wh().get())
        .sum();
    bescom_paise(total)
}

#[test]
fn the_three_programs_bill_every_home_as_its_plaintext_twin() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("work");
    let data = sample();
    let output = seer(
        &[
            "--data",
            data.to_str().unwrap(),
            "--month",
            "2007-01",
            "--homes",
            "1",
            "--synthetic",
            "2",
            "--seed",
            "11",
            "--jobs",
            "3",
            "--json",
        ],
        &workdir,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "seer run failed: {stderr}");
    let report: RunReport = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report.period, "2007-01");
    assert_eq!(report.homes.len(), 3);
    assert!(report.all_match(), "{report:#?}");
    // Where the release reports energy per slab, it is the plaintext split.
    for home in &report.homes {
        assert_ne!(home.slabs_match, Some(false), "{home:#?}");
    }

    // The UCI sample's January, by hand.
    let (readings, total_wh) = sample_january_wh();
    let uci = &report.homes[0];
    assert_eq!(uci.label, "UCI household, 2007-01");
    assert_eq!(uci.readings, readings);
    assert_eq!(uci.plaintext_wh_per_slab.iter().sum::<i64>(), total_wh);
    assert_eq!(uci.released_paise, Some(bescom_paise(total_wh)), "{uci:#?}");
    // 2007-01-30 21:15 to the 31st: one window (days 29–31) of the default week-long batches.
    assert_eq!(uci.batches, 1);

    // The synthetic homes (numbered after the UCI one), with the exact tariff.
    for home in &report.homes[1..] {
        let expected = synthetic_january_paise(11, u32::try_from(home.index).unwrap());
        assert_eq!(home.released_paise, Some(expected), "{home:#?}");
        assert_eq!(home.plaintext_paise, expected);
        assert_eq!(home.readings, 31 * 96);
        // Weeks 1–7, 8–14, 15–21, 22–28 and the closing 29–31.
        assert_eq!(home.batches, 5);
        assert_eq!(home.difference_paise, Some(0));
        assert!(home.refused.is_none());
    }

    // The bytes the meters sent: two ciphertexts per batch, summed over the homes.
    let bytes = &report.bytes;
    assert_eq!(bytes.batches, 11);
    assert_eq!(bytes.readings as usize, readings + 2 * 31 * 96);
    let sent: u64 = report
        .homes
        .iter()
        .map(|h| h.billing_bytes + h.analytics_bytes)
        .sum();
    assert_eq!(bytes.billing_bytes + bytes.analytics_bytes, sent);
    assert!(
        (bytes.per_reading() - sent as f64 / bytes.readings as f64).abs() < 1e-9,
        "{bytes:?}"
    );

    // The group's hourly totals: every hour of January answered; the three homes are all
    // present (the floor for a group of three) only from the UCI sample's first reading on.
    let totals = &report.group_totals;
    assert_eq!(totals.len(), 1, "{totals:#?}");
    let g = &totals[0];
    assert_eq!((g.group, g.homes, g.windows, g.hours), (0, 3, 5, 31 * 24));
    assert_eq!(g.released + g.withheld, g.hours, "{g:#?}");
    assert!(g.released >= 24 && g.withheld > 0, "{g:#?}");
    assert!(
        g.rms_error_kwh.is_some() && g.expected_sigma_kwh.is_some(),
        "{g:#?}"
    );
    assert!(
        g.refused_inputs.is_empty() && g.conflicts.is_empty(),
        "{g:#?}"
    );

    // One packing group; both servers stopped cleanly on SIGTERM.
    assert_eq!(report.groups, vec![0]);
    let names: Vec<&str> = report.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["utility-server", "key-authority"]);
    assert!(
        report.servers.iter().all(|s| s.clean),
        "{:?}",
        report.servers
    );
}

#[test]
fn a_month_missing_from_the_data_fails_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("work");
    let data = sample();
    // Two homes need 2006-01 too, which the sample does not hold.
    let output = seer(
        &[
            "--data",
            data.to_str().unwrap(),
            "--month",
            "2007-01",
            "--homes",
            "2",
        ],
        &workdir,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2006-01"), "{stderr}");
    assert!(!stderr.contains("starting the key authority"), "{stderr}");
    assert!(
        !workdir.join("logs/key-authority.log").exists(),
        "no program was started"
    );
}

#[test]
fn a_directory_not_made_by_seer_run_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("notes.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let output = seer(&["--synthetic", "1", "--homes", "0"], dir.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was not made by `seer run`"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
}

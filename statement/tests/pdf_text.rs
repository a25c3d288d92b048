//! The statement's text, read back from the PDF by independent readers: `lopdf` always, and
//! poppler's `pdftotext` when it is installed (Debian `poppler-utils`, which
//! `scripts/setup.sh` installs). The expected figures are computed here by hand from the
//! tariff's rates, not by the crate's own formatting.

use std::process::Command;

use chrono::{TimeZone, Utc};
use seer_core::tariff::{SlabConfig, Tariff, TariffConfig};
use seer_core::{MeterId, Period};
use seer_statement::{PrivacyFacts, ReleaseFact, SlabLine, Statement, StatementError, render_pdf};

/// A plain slab tariff with no bands: 0–50 kWh at ₹4.10, 50–100 at ₹5.55, above at ₹7.10.
fn tariff() -> Tariff {
    let slab = |up_to_kwh: Option<f64>, rate_paise| SlabConfig {
        up_to_kwh,
        rate_paise,
    };
    let config = TariffConfig {
        name: "Test slabs".to_owned(),
        slabs: vec![
            slab(Some(50.0), 410),
            slab(Some(100.0), 555),
            slab(None, 710),
        ],
        bands: Vec::new(),
    };
    Tariff::try_new(config).expect("tariff")
}

/// 50 kWh + 50 kWh + 23.456 kWh = 123.456 kWh.
fn statement(releases: usize) -> Statement {
    let tariff = tariff();
    let cells = vec![
        ("0-50 kWh".to_owned(), 50_000),
        ("50-100 kWh".to_owned(), 50_000),
        ("above 100 kWh".to_owned(), 23_456),
    ];
    let slabs = SlabLine::priced(&tariff, cells).expect("priced");
    let period: Period = "2026-11".parse().expect("period");
    let daily_kwh = (1..=30)
        .map(|d| (format!("2026-11-{d:02}"), 2.0 + f64::from(d % 7)))
        .collect();
    Statement {
        meter_id: MeterId::try_new("home-0042").expect("meter id"),
        period,
        tariff_name: tariff.name().to_owned(),
        slabs,
        // 50 × 410 + 50 × 555 + 23.456 × 710 = 20500 + 27750 + 16653.76 → 64903.76 paise,
        // rounded once: 64904 paise.
        total_paise: 64_904,
        daily_kwh,
        privacy: PrivacyFacts {
            epsilon_spent: 0.25,
            epsilon_budget: Some(1.0),
            releases: (0..releases)
                .map(|i| ReleaseFact {
                    what: format!("release number {i}"),
                    when: Utc
                        .with_ymd_and_hms(2026, 12, 1, 9, 30, 0)
                        .single()
                        .expect("time"),
                })
                .collect(),
        },
        issued_at: Utc
            .with_ymd_and_hms(2026, 12, 4, 20, 30, 0)
            .single()
            .expect("time"),
    }
}

/// All text of all pages, through lopdf.
fn lopdf_text(pdf: &[u8]) -> (usize, String) {
    let doc = lopdf::Document::load_mem(pdf).expect("lopdf parses the statement");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    let text = doc.extract_text(&pages).expect("lopdf extracts text");
    (pages.len(), text)
}

/// The figures the statement must show, worked out by hand.
const EXPECTED: [&str; 10] = [
    "50.000",     // slab 1 kWh
    "205.00",     // 50 kWh × ₹4.10
    "277.50",     // 50 kWh × ₹5.55
    "23.456",     // slab 3 kWh
    "166.54",     // 23.456 × ₹7.10 = 166.5376 → 166.54
    "123.456",    // total kWh
    "Rs. 649.04", // the released amount
    "home-0042",
    "November 2026 (2026-11)",
    "epsilon = 0.250 of the month's budget of 1.000 (25.0 %)",
];

#[test]
fn lopdf_reads_the_slabs_amounts_and_privacy_facts() {
    let pdf = render_pdf(&statement(2)).expect("render");
    assert!(pdf.starts_with(b"%PDF-"));
    // A sample to look at (the README's screenshot is taken from it).
    if let Some(path) = std::env::var_os("SEER_STATEMENT_SAMPLE") {
        std::fs::write(path, &pdf).expect("write the sample statement");
    }
    let (pages, text) = lopdf_text(&pdf);
    assert_eq!(pages, 1, "a short statement is one page");
    for expected in EXPECTED {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(text.contains("2026-12-01 09:30 UTC"), "{text}");
    assert!(text.contains("release number 1"), "{text}");
    // The per-slab amounts add to 649.04 here, so no rounding note.
    assert!(!text.contains("rounded to the paisa"), "{text}");
}

#[test]
fn pdftotext_reads_the_same_figures() {
    let Ok(version) = Command::new("pdftotext").arg("-v").output() else {
        eprintln!("pdftotext not installed (poppler-utils); checked with lopdf only");
        return;
    };
    assert!(version.status.success() || !version.stderr.is_empty());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("statement.pdf");
    std::fs::write(&path, render_pdf(&statement(2)).expect("render")).expect("write pdf");
    let out = Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&path)
        .arg("-")
        .output()
        .expect("run pdftotext");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    for expected in EXPECTED {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // Each slab's row reads label, kWh, amount on one line.
    assert!(
        text.lines()
            .any(|l| l.contains("above 100 kWh") && l.contains("23.456") && l.contains("166.54")),
        "{text}"
    );
}

#[test]
fn a_long_release_list_continues_on_a_second_page() {
    let pdf = render_pdf(&statement(40)).expect("render");
    let (pages, text) = lopdf_text(&pdf);
    assert_eq!(pages, 2);
    assert!(text.contains("release number 39"), "{text}");
    assert!(text.contains("page 2 of 2"), "{text}");
}

#[test]
fn rounding_note_when_slab_amounts_differ_from_the_bill() {
    let mut s = statement(0);
    s.total_paise += 1;
    let (_, text) = lopdf_text(&render_pdf(&s).expect("render"));
    assert!(text.contains("rounded to the paisa"), "{text}");
    assert!(text.contains("Rs. 649.05"), "{text}");
    assert!(text.contains("Nothing was released"), "{text}");
}

#[test]
fn bad_inputs_are_refused() {
    let mut s = statement(0);
    s.daily_kwh[3].1 = f64::NAN;
    assert!(matches!(
        render_pdf(&s),
        Err(StatementError::InvalidUsage { .. })
    ));

    let mut s = statement(0);
    s.daily_kwh[0].0 = "2026-12-01".into();
    assert!(matches!(
        render_pdf(&s),
        Err(StatementError::DayOutsidePeriod { .. })
    ));

    let mut s = statement(0);
    s.daily_kwh[0].0 = "yesterday".into();
    assert!(matches!(
        render_pdf(&s),
        Err(StatementError::InvalidDay { .. })
    ));

    let mut s = statement(0);
    s.daily_kwh.extend(s.daily_kwh.clone().into_iter().take(2));
    assert!(matches!(
        render_pdf(&s),
        Err(StatementError::TooManyDays { days: 32, max: 31 })
    ));

    let mut s = statement(0);
    s.privacy.epsilon_spent = -0.1;
    assert!(matches!(
        render_pdf(&s),
        Err(StatementError::InvalidEpsilon { .. })
    ));

    assert!(matches!(
        SlabLine::priced(&tariff(), [("only".to_owned(), 1)]),
        Err(StatementError::CellCount {
            expected: 3,
            got: 1
        })
    ));
}

#[test]
fn empty_usage_and_unpriced_rows_render() {
    let mut s = statement(0);
    s.daily_kwh.clear();
    for line in &mut s.slabs {
        line.amount_paise = None;
    }
    let (_, text) = lopdf_text(&render_pdf(&s).expect("render"));
    assert!(text.contains("No daily readings"), "{text}");
    assert!(text.contains("123.456"), "{text}");
}

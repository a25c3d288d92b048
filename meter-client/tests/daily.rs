//! The meter's daily lane without the network: the window it reads, the input it stores and
//! reuses, the days it skips, and the receipt it records (`meter_client::daily`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use chrono::{NaiveDate, NaiveDateTime, TimeDelta, Timelike as _};
use meter_client::analytics::receipt_statement;
use meter_client::daily::{
    DailyEncryptor, DailyLane, HISTORY_DAYS, InputStore, Prepared, prepare_day, read_window,
    receipt,
};
use meter_client::source::{self, OpenedSource, SourceSpec};
use seer_ckks::{Ciphertext, CkksContext, Decryptor, KeyGenerator, SecretKey};
use seer_daily::layout::{BLOCK, block_offset};

/// The registered daily model.
fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daily/models/uci-daily.json")
}

/// Groups of four homes here (a deployment's groups are its billing groups), so that homes
/// 6, 7 and 11 fall in groups 1, 1 and 2.
const GROUP_SIZE: u64 = 4;

struct Keys {
    ctx: CkksContext,
    secret: SecretKey,
    encryptor: Arc<DailyEncryptor>,
}

/// One key pair of the daily parameter set per test binary.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ctx = CkksContext::new(seer_daily::PARAMETERS).expect("context");
        let keygen = KeyGenerator::new(&ctx).expect("keygen");
        let public_key = keygen.public_key().expect("public key");
        let encryptor = Arc::new(DailyEncryptor::new(&ctx, &public_key).expect("encryptor"));
        Keys {
            secret: keygen.secret_key().expect("secret key"),
            ctx,
            encryptor,
        }
    })
}

fn date(text: &str) -> NaiveDate {
    text.parse().expect("date")
}

/// A plausible home: a base load, a morning and an evening peak, a weekly rhythm and a small
/// drift by day, so that every quarter hour of every day has its own value.
fn kwh_at(t: NaiveDateTime) -> f64 {
    let day = (t.date() - date("2024-01-01")).num_days() as f64;
    let hour = t.hour();
    let peak = match hour {
        6..=8 => 0.15,
        18..=21 => 0.3,
        _ => 0.0,
    };
    0.05 + peak + 0.01 * (day % 7.0) + 0.0001 * day + 0.001 * f64::from(t.minute() / 15)
}

/// A `timestamp,kwh` file of 15-minute readings over `[from, until)`, without the quarter
/// hours in `missing`.
fn write_csv(path: &Path, from: NaiveDate, until: NaiveDate, missing: &[NaiveDateTime]) {
    let mut text = String::from("timestamp,kwh\n");
    let mut t = from.and_hms_opt(0, 0, 0).expect("midnight");
    let end = until.and_hms_opt(0, 0, 0).expect("midnight");
    while t < end {
        if !missing.contains(&t) {
            text.push_str(&format!(
                "{},{:.6}\n",
                t.format("%Y-%m-%d %H:%M:%S"),
                kwh_at(t)
            ));
        }
        t += TimeDelta::minutes(15);
    }
    std::fs::write(path, text).expect("write csv");
}

fn open_csv(path: &Path) -> Arc<OpenedSource> {
    Arc::new(source::open(&SourceSpec::Csv(path.to_owned())).expect("csv source"))
}

fn hourly(day: NaiveDate) -> [f64; 24] {
    let mut hours = [0.0; 24];
    for (h, slot) in hours.iter_mut().enumerate() {
        let start = day.and_hms_opt(h as u32, 0, 0).expect("hour");
        *slot = (0..4)
            .map(|q| {
                let t = start + TimeDelta::minutes(15 * q);
                (kwh_at(t) * 1e6).round() / 1e6
            })
            .sum();
    }
    hours
}

#[test]
fn the_preparation_window_is_the_four_weeks_before_the_day_and_the_day() {
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("home.csv");
    // Readings well before and after the window, and one quarter hour missing inside it.
    let gap = date("2024-02-20").and_hms_opt(3, 15, 0).expect("time");
    write_csv(&csv, date("2024-01-01"), date("2024-03-20"), &[gap]);
    let source = open_csv(&csv);
    let day = date("2024-03-01");
    let window = read_window(&source, day).expect("window");
    assert_eq!(window.day, day);
    assert_eq!(window.readings, (HISTORY_DAYS as usize + 1) * 96 - 1);
    assert_eq!(window.readings_of_day, 96);
    assert_eq!(window.readings_per_day(), 96);
    let days = window.history.days();
    assert_eq!(days.first(), Some(&date("2024-02-02")));
    assert_eq!(days.last(), Some(&day));
    assert_eq!(days.len(), HISTORY_DAYS as usize + 1);
    // Nothing from outside the window.
    assert!(window.history.day(date("2024-02-01")).is_none());
    assert!(window.history.day(date("2024-03-02")).is_none());
    // Each hour of a full day is the sum of the source's four quarter hours.
    for d in [date("2024-02-02"), date("2024-02-15"), day] {
        let got = window.history.day(d).expect("a complete day");
        for (h, (a, b)) in got.iter().zip(hourly(d)).enumerate() {
            assert!((a - b).abs() < 1e-9, "{d} hour {h}: {a} vs {b}");
        }
    }
}

#[tokio::test]
async fn a_stored_input_is_resent_byte_for_byte_and_decrypts_to_the_prepared_block() {
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("home.csv");
    write_csv(&csv, date("2024-01-01"), date("2024-03-20"), &[]);
    let source = open_csv(&csv);
    let state = dir.path().join("state");
    let store = InputStore::open(&state).expect("store");
    let lane = DailyLane::load(&model_path(), 6, GROUP_SIZE).expect("model");
    let placement = lane.placement();
    assert_eq!((placement.group, placement.block), (1, 2));
    let day = date("2024-03-01");
    let keys = keys();

    let first = prepare_day("m-6", &lane, &keys.encryptor, &source, &store, day)
        .await
        .expect("prepared");
    let Prepared::Ready {
        input,
        resent,
        encrypt_ms,
        readings_of_day,
    } = first
    else {
        panic!("four weeks of history prepare: {first:?}");
    };
    assert!(!resent);
    assert!(encrypt_ms.is_some());
    assert_eq!(readings_of_day, 96);
    assert!(store.dir().join("2024-03-01.ct").exists());
    assert!(store.dir().join("2024-03-01.receipt").exists());
    assert_eq!(input.receipt.input_blake3, vec![input.digest().to_vec()]);
    eprintln!(
        "one N4096 daily ciphertext: {} bytes compressed, {:.0} bytes per reading, \
         encrypted in {:.1} ms",
        input.ciphertext.len(),
        input.ciphertext.len() as f64 / 96.0,
        encrypt_ms.unwrap_or_default()
    );

    // What was encrypted is the model's preparation of the window, at the home's block only.
    let window = read_window(&source, day).expect("window");
    let want = lane.model().prepare(&window.history, day).expect("prepare");
    let ct = Ciphertext::from_bytes(&keys.ctx, &input.ciphertext).expect("ciphertext");
    eprintln!(
        "the same ciphertext uncompressed: {} bytes",
        ct.to_bytes_uncompressed(&keys.ctx).expect("bytes").len()
    );
    let values = Decryptor::new(&keys.ctx, &keys.secret)
        .expect("decryptor")
        .decrypt_values(&ct)
        .expect("decrypts");
    let offset = block_offset(placement.block);
    for (i, v) in values.iter().enumerate() {
        let expected = if (offset..offset + BLOCK).contains(&i) {
            want.values()[i - offset]
        } else {
            0.0
        };
        assert!((v - expected).abs() < 1e-3, "slot {i}: {v} vs {expected}");
    }

    // A rerun reads it back: the same bytes, the same digest, no encryption.
    let again = prepare_day("m-6", &lane, &keys.encryptor, &source, &store, day)
        .await
        .expect("prepared again");
    let Prepared::Ready {
        input: again,
        resent,
        encrypt_ms,
        ..
    } = again
    else {
        panic!("the stored input is reused");
    };
    assert!(resent);
    assert_eq!(encrypt_ms, None);
    assert_eq!(again, input);
    assert_eq!(again.digest(), input.digest());

    // Another model (other bytes: another BLAKE3) never replaces an unsent stored input.
    let other = {
        let mut bytes = std::fs::read(model_path()).expect("model");
        bytes.push(b'\n');
        DailyLane::try_new(&bytes, 6, GROUP_SIZE).expect("the same model, other bytes")
    };
    let err = prepare_day("m-6", &other, &keys.encryptor, &source, &store, day)
        .await
        .expect_err("another model");
    assert!(err.to_string().contains("same model"), "{err}");
    // Nor does another home index.
    let moved = DailyLane::load(&model_path(), 7, GROUP_SIZE).expect("model");
    let err = prepare_day("m-6", &moved, &keys.encryptor, &source, &store, day)
        .await
        .expect_err("another block");
    assert!(err.to_string().contains("home index"), "{err}");

    // A damaged ciphertext is refused, not sent.
    std::fs::write(store.dir().join("2024-03-01.ct"), b"damaged").expect("write");
    let err = prepare_day("m-6", &lane, &keys.encryptor, &source, &store, day)
        .await
        .expect_err("damaged");
    assert!(err.to_string().contains("digest"), "{err}");
}

#[tokio::test]
async fn a_day_without_enough_history_is_skipped_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("home.csv");
    write_csv(&csv, date("2024-03-01"), date("2024-03-04"), &[]);
    let source = open_csv(&csv);
    let store = InputStore::open(&dir.path().join("state")).expect("store");
    let lane = DailyLane::load(&model_path(), 0, GROUP_SIZE).expect("model");
    let outcome = prepare_day(
        "m-0",
        &lane,
        &keys().encryptor,
        &source,
        &store,
        date("2024-03-03"),
    )
    .await
    .expect("a skip is not an error");
    let Prepared::Skipped { reason } = outcome else {
        panic!("three days of history are not enough: {outcome:?}");
    };
    assert!(reason.contains("2024-03-03"), "{reason}");
    assert_eq!(
        std::fs::read_dir(store.dir()).expect("dir").count(),
        0,
        "nothing stored for a skipped day"
    );
    // A day the source has no readings of at all is skipped too.
    let outcome = prepare_day(
        "m-0",
        &lane,
        &keys().encryptor,
        &source,
        &store,
        date("2025-01-01"),
    )
    .await
    .expect("a skip is not an error");
    assert!(matches!(outcome, Prepared::Skipped { .. }), "{outcome:?}");
}

#[test]
fn the_receipt_names_the_kind_block_and_period() {
    let lane = DailyLane::load(&model_path(), 11, GROUP_SIZE).expect("model");
    let model_blake3 = blake3::hash(&std::fs::read(model_path()).expect("model"))
        .to_hex()
        .to_string();
    let ciphertext = b"the serialized ciphertext";
    let r = receipt("m-11", date("2024-03-01"), &lane, ciphertext);
    assert_eq!(r.kind, "daily");
    assert_eq!(r.meter_id, "m-11");
    assert_eq!(r.input_id, "daily-2024-03-01");
    assert_eq!(r.first_period, "2024-03-01");
    // Home 11 in groups of 4: group 2, block 3 of 512 slots.
    assert_eq!(r.group, 2);
    assert_eq!(r.slot_offset, 3 * 512);
    assert_eq!(r.slot_count, 512);
    assert_eq!(
        r.input_blake3,
        vec![blake3::hash(ciphertext).as_bytes().to_vec()]
    );
    assert_eq!(r.lane, "exact");
    assert_eq!(r.epsilon, 0.0);
    // The exact lane: no reading noised (the key authority refuses anything else).
    assert_eq!(r.readings_per_day, 0);
    assert_eq!(r.model_blake3, model_blake3);
    assert!(r.signature.is_empty(), "signed only when sent");
    // The statement the device key signs carries every one of them.
    let s = receipt_statement(&r).expect("statement");
    assert_eq!(
        (
            s.kind.as_str(),
            s.input_id.as_str(),
            s.first_period.as_str()
        ),
        ("daily", "daily-2024-03-01", "2024-03-01")
    );
    assert_eq!((s.slot_offset, s.slot_count, s.group), (1536, 512, 2));
    assert_eq!(s.model_blake3, model_blake3);
    assert_eq!(s.input_blake3, vec![*blake3::hash(ciphertext).as_bytes()]);
    assert_eq!(
        (s.lane.as_str(), s.epsilon, s.readings_per_day),
        ("exact", 0.0, 0)
    );
}

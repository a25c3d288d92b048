//! Live meters over MQTT, end to end: a month of readings of two homes — a Tasmota plug and a
//! DSMR reader — is published to a real Mosquitto broker (QoS 1, a rumqttc client in the
//! test), two `meter-client run --source mqtt://…` processes consume them into batches for a
//! real key authority and utility server, and the Tasmota meter is killed with SIGKILL twice
//! mid-stream (the kills land at random inbox counts between a third and two thirds of the
//! stream, seeded by `SEER_MQTT_SEED`) and restarted. Then the month is billed with
//! `utility-server bill`, and:
//!
//! - every sample published is in the meter's inbox exactly once (a redelivered message and a
//!   republished one are counted as duplicates, the malformed one as malformed, none stored);
//! - each meter sent exactly the month's five weekly batches;
//! - each released bill equals the plaintext tariff (`seer_core::tariff`) over readings
//!   computed here, independently, from the registers published (quarter-hour differences).
//!
//! The broker is the test's own Mosquitto (Debian's `mosquitto`, which `scripts/mosquitto.sh`
//! installs) on a free loopback port with a private configuration (persistence, no limit on
//! queued messages), so parallel runs never share a broker or a topic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::{NaiveDateTime, TimeDelta, Timelike as _};
use meter_client::mqtt::MqttSource;
use meter_client::source::MeterReading;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use seer_core::data::Period;
use seer_core::tariff::Tariff;
use seer_core::units::Joules;
use seer_tests::oracle::monthly_bills;
use seer_tests::rng::SplitMix64;
use seer_tests::{Deployment, DeploymentOptions, MeterRun, free_port, runtime};

const TASMOTA_METER: &str = "MQTT-TASMOTA-0";
const DSMR_METER: &str = "MQTT-DSMR-1";
/// January 2026, weekly batches: days 1–7, 8–14, 15–21, 22–28 and 29–31.
const BATCHES: u64 = 5;
/// 0.01 Wh in joules.
const JOULES_PER_UNIT: i64 = 36;

fn month() -> Period {
    Period::try_new(2026, 1).expect("a month")
}

/// The test's own broker, killed when dropped.
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto() -> anyhow::Result<PathBuf> {
    for candidate in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let found = Command::new("sh")
        .args(["-c", "command -v mosquitto"])
        .output()
        .context("looking for mosquitto")?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    ensure!(
        found.status.success() && !path.is_empty(),
        "mosquitto is not installed: run scripts/mosquitto.sh (it installs Debian's mosquitto)"
    );
    Ok(PathBuf::from(path))
}

fn start_broker() -> anyhow::Result<Broker> {
    let dir = tempfile::tempdir().context("the broker's directory")?;
    let port = free_port()?;
    let user = Command::new("id").arg("-un").output().context("id -un")?;
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser {}\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 0\nlog_dest stderr\n",
            String::from_utf8_lossy(&user.stdout).trim(),
            dir.path().display()
        ),
    )
    .context("writing mosquitto.conf")?;
    let child = Command::new(mosquitto()?)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mosquitto")?;
    let broker = Broker {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(broker)
}

/// One home's published month: the register at every quarter hour from the month's start
/// through the next month's first midnight, plus samples inside some quarters.
struct Home {
    meter: &'static str,
    home_index: u32,
    topic: String,
    format: &'static str,
    /// (time, register in 0.01 Wh), at each boundary.
    boundaries: Vec<(NaiveDateTime, i64)>,
    /// Samples inside quarters (they must not change the readings).
    inside: Vec<(NaiveDateTime, i64)>,
    /// The DSMR reader's night share of each register (tariff 1); empty for Tasmota.
    night: BTreeMap<NaiveDateTime, i64>,
}

impl Home {
    fn new(
        meter: &'static str,
        home_index: u32,
        topic: String,
        format: &'static str,
        rng: &mut SplitMix64,
    ) -> Self {
        let start = month().start();
        let end = month().end();
        let step = TimeDelta::minutes(15);
        let dsmr = format == "dsmr";
        let (mut register, mut night_register) = (rng.in_range(0, 50_000_000) as i64, 0_i64);
        if dsmr {
            // DSMR registers are whole Wh (3 decimals of kWh): multiples of 100 units.
            register -= register % 100;
        }
        let mut home = Self {
            meter,
            home_index,
            topic,
            format,
            boundaries: Vec::new(),
            inside: Vec::new(),
            night: BTreeMap::new(),
        };
        let mut t = start;
        while t <= end {
            home.boundaries.push((t, register));
            home.night.insert(t, night_register);
            // 0–400 Wh in the quarter (whole Wh for DSMR, 0.01 Wh for Tasmota).
            let used = if dsmr {
                rng.in_range(0, 400) as i64 * 100
            } else {
                rng.in_range(0, 40_000) as i64
            };
            if !dsmr && t.minute() == 0 && t < end {
                home.inside
                    .push((t + TimeDelta::minutes(7), register + used / 2));
            }
            if dsmr && t.hour() < 7 {
                night_register += used;
            }
            register += used;
            t += step;
        }
        home
    }

    fn payload(&self, time: NaiveDateTime, units: i64) -> String {
        let stamp = time.format("%Y-%m-%dT%H:%M:%S");
        if self.format == "dsmr" {
            let night = self.night.get(&time).copied().unwrap_or(0);
            let wh = |units: i64| format!("{}.{:03}", units / 100_000, (units % 100_000) / 100);
            format!(
                r#"{{"id": 1, "timestamp": "{stamp}+01:00", "electricity_delivered_1": "{}", "electricity_returned_1": "0.000", "electricity_delivered_2": "{}", "electricity_returned_2": "0.000", "electricity_currently_delivered": "0.420"}}"#,
                wh(night),
                wh(units - night)
            )
        } else {
            format!(
                r#"{{"Time":"{stamp}","ENERGY":{{"TotalStartTime":"2025-06-01T00:00:00","Total":{}.{:05},"Yesterday":1.234,"Today":0.567,"Power":230,"Voltage":231,"Current":1.0}}}}"#,
                units / 100_000,
                units % 100_000
            )
        }
    }

    /// The samples the inbox must hold.
    fn distinct_samples(&self) -> usize {
        self.boundaries.len() + self.inside.len()
    }

    /// The plaintext bill of the month, from the boundary registers alone (the oracle).
    fn oracle_paise(&self) -> i64 {
        let readings: Vec<MeterReading> = self
            .boundaries
            .windows(2)
            .map(|w| MeterReading {
                start: w[0].0,
                energy: Joules::try_new((w[1].1 - w[0].1) * JOULES_PER_UNIT).expect("joules"),
            })
            .collect();
        assert_eq!(readings.len(), 31 * 96);
        let bills = monthly_bills(&Tariff::bescom(), &readings).expect("plaintext bills");
        bills[&month()].paise
    }

    fn run(&self, deployment: &Deployment, broker: &Broker, token: &str) -> MeterRun {
        let home = self.home_index.to_string();
        deployment
            .meter(self.meter, &format!("mqtt://127.0.0.1:{}", broker.port))
            .token(token)
            .args(["--home-index", home.as_str()])
            .args(["--mqtt-topic", self.topic.as_str()])
            .args(["--mqtt-format", self.format])
            .args(["--batch-days", "7", "--max-attempts", "20", "--json"])
    }
}

/// Starts `run`, its stderr appended to `STATE.log` beside its state directory (shown when
/// the test fails: see [`log_tail`]).
fn spawn(run: &MeterRun) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.state_dir().with_extension("log"))
        .expect("the meter's log file");
    run.command()
        .expect("meter-client is built")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("meter-client starts")
}

/// The end of the log of every start of `run`.
fn log_tail(run: &MeterRun) -> String {
    let text = std::fs::read_to_string(run.state_dir().with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A persistent session for `meter`'s client id subscribed to `topic`, made before anything
/// is published, so the broker queues every message for the meter even before it first runs.
async fn create_session(port: u16, meter: &str, topic: &str) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(MqttSource::client_id(meter), "127.0.0.1", port);
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Packet::SubAck(_)) => break,
            _ => continue,
        }
    }
    client.disconnect().await?;
    // Drive the event loop until the disconnect is sent.
    while eventloop.poll().await.is_ok() {}
    Ok(())
}

/// Publishes `messages` (topic, payload) with QoS 1 and returns once every one is
/// acknowledged by the broker.
async fn publish(port: u16, messages: Vec<(String, String)>) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(format!("seer-test-publisher-{port}"), "127.0.0.1", port);
    options.set_inflight(50);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    while acked < total {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
            acked += 1;
        }
    }
    let client = sender.await??;
    client.disconnect().await?;
    while eventloop.poll().await.is_ok() {}
    Ok(())
}

/// (samples, malformed, duplicates) of `topic` in the meter's inbox, read while it runs.
async fn inbox(state: &Path, topic: &str) -> anyhow::Result<(u64, u64, u64)> {
    let file = state.join("state.db");
    if !file.exists() {
        return Ok((0, 0, 0));
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .read_only(true);
    let mut conn = sqlx::ConnectOptions::connect(&options).await?;
    let tables: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'mqtt_inbox'")
            .fetch_one(&mut conn)
            .await?;
    if tables == 0 {
        return Ok((0, 0, 0));
    }
    let samples: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mqtt_inbox WHERE topic = ?")
        .bind(topic)
        .fetch_one(&mut conn)
        .await?;
    let counters: Option<(i64, i64)> =
        sqlx::query_as("SELECT malformed, duplicates FROM mqtt_counters WHERE topic = ?")
            .bind(topic)
            .fetch_optional(&mut conn)
            .await?;
    let (malformed, duplicates) = counters.unwrap_or((0, 0));
    Ok((
        u64::try_from(samples)?,
        u64::try_from(malformed)?,
        u64::try_from(duplicates)?,
    ))
}

fn terminate(mut child: Child, meter: &str) -> anyhow::Result<String> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .context("kill -TERM")?;
    ensure!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{meter} did not exit within 180 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{meter} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn a_month_published_over_mqtt_is_billed_exactly_through_two_sigkills() {
    let started = Instant::now();
    let runtime = runtime().expect("runtime");
    let seed = SplitMix64::seed_from_env("SEER_MQTT_SEED");
    let mut rng = SplitMix64::new(seed);
    let broker = start_broker().expect("mosquitto starts");
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let utility = deployment.token("utility", None).expect("token");

    // Unique topics per run, so a shared broker would not mix runs either.
    let run_id = format!("{}-{seed}", std::process::id());
    let tasmota = Home::new(
        TASMOTA_METER,
        0,
        format!("tele/seer-test-{run_id}/SENSOR"),
        "tasmota",
        &mut rng,
    );
    let dsmr = Home::new(
        DSMR_METER,
        1,
        format!("seer-test-{run_id}/dsmr/json"),
        "dsmr",
        &mut rng,
    );
    for home in [&tasmota, &dsmr] {
        runtime
            .block_on(create_session(broker.port, home.meter, &home.topic))
            .expect("persistent session");
    }

    // What is published: each home's samples in time order; for the plug, also a malformed
    // message and a republished sample in the middle of the stream.
    let mut tasmota_messages: Vec<(NaiveDateTime, i64)> = tasmota
        .boundaries
        .iter()
        .chain(&tasmota.inside)
        .copied()
        .collect();
    tasmota_messages.sort();
    let mut messages: Vec<(String, String)> = Vec::new();
    let middle = tasmota_messages.len() / 2;
    for (i, (time, units)) in tasmota_messages.iter().enumerate() {
        messages.push((tasmota.topic.clone(), tasmota.payload(*time, *units)));
        if i == middle {
            messages.push((
                tasmota.topic.clone(),
                r#"{"Time":"2026-01-16T12:00:00","ENERGY":{"Power":12}}"#.to_owned(),
            ));
            messages.push((tasmota.topic.clone(), tasmota.payload(*time, *units)));
        }
    }
    for (time, units) in &dsmr.boundaries {
        messages.push((dsmr.topic.clone(), dsmr.payload(*time, *units)));
    }

    let tasmota_token = deployment
        .token("household", Some(TASMOTA_METER))
        .expect("token");
    let dsmr_token = deployment
        .token("household", Some(DSMR_METER))
        .expect("token");
    let tasmota_run = tasmota.run(&deployment, &broker, &tasmota_token);
    let dsmr_run = dsmr.run(&deployment, &broker, &dsmr_token);
    let mut tasmota_child = spawn(&tasmota_run);
    let dsmr_child = spawn(&dsmr_run);

    let publisher = runtime.spawn(publish(broker.port, messages));

    // Two SIGKILLs of the plug's meter at random inbox counts mid-stream.
    let expected = tasmota.distinct_samples() as u64;
    let mut kills = Vec::new();
    let mut targets: Vec<u64> = (0..2)
        .map(|i| rng.in_range(expected * (1 + i) / 4, expected * (2 + i) / 4))
        .collect();
    targets.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(300);
    for target in targets {
        loop {
            let (stored, _, _) = runtime
                .block_on(inbox(tasmota_run.state_dir(), &tasmota.topic))
                .expect("inbox");
            if stored >= target {
                tasmota_child.kill().expect("SIGKILL");
                let _ = tasmota_child.wait();
                let (at_kill, _, _) = runtime
                    .block_on(inbox(tasmota_run.state_dir(), &tasmota.topic))
                    .expect("inbox");
                eprintln!("SIGKILL at {at_kill} of {expected} samples stored");
                assert!(at_kill < expected, "the kill came after the stream");
                kills.push(at_kill);
                tasmota_child = spawn(&tasmota_run);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the inbox stalled at {stored} samples: {}",
                log_tail(&tasmota_run)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    runtime
        .block_on(publisher)
        .expect("the publisher task")
        .expect("every message published");

    // Both meters catch up: every sample stored, every batch acknowledged.
    for (home, run) in [(&tasmota, &tasmota_run), (&dsmr, &dsmr_run)] {
        loop {
            let (stored, _, _) = runtime
                .block_on(inbox(run.state_dir(), &home.topic))
                .expect("inbox");
            let cursor = runtime
                .block_on(deployment.cursor(home.meter, &utility))
                .unwrap_or(0);
            if stored == home.distinct_samples() as u64 && cursor == BATCHES {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {stored} of {} samples stored, {cursor} of {BATCHES} batches: {}",
                home.meter,
                home.distinct_samples(),
                log_tail(run)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let tasmota_summary = terminate(tasmota_child, TASMOTA_METER).expect("clean stop");
    let dsmr_summary = terminate(dsmr_child, DSMR_METER).expect("clean stop");
    eprintln!("{TASMOTA_METER}: {tasmota_summary}{DSMR_METER}: {dsmr_summary}");

    // Nothing lost, nothing doubled, the poison message counted and never stored.
    let (stored, malformed, duplicates) = runtime
        .block_on(inbox(tasmota_run.state_dir(), &tasmota.topic))
        .expect("inbox");
    assert_eq!(stored, expected);
    assert_eq!(malformed, 1);
    assert!(duplicates >= 1, "the republished sample is a duplicate");
    let (stored, malformed, _) = runtime
        .block_on(inbox(dsmr_run.state_dir(), &dsmr.topic))
        .expect("inbox");
    assert_eq!(stored, dsmr.distinct_samples() as u64);
    assert_eq!(malformed, 0);
    for home in [&tasmota, &dsmr] {
        let cursor = runtime
            .block_on(deployment.cursor(home.meter, &utility))
            .expect("cursor");
        assert_eq!(cursor, BATCHES, "{}", home.meter);
    }

    // The bill of the month, against the plaintext tariff on the published registers.
    let period = month().to_string();
    let report = deployment.bill(&period, 0, &utility).expect("bill");
    assert_eq!(report["closing_homes"], 2, "{report}");
    assert_eq!(
        report["refused"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let released = report["released"].as_array().expect("released bills");
    assert_eq!(released.len(), 2, "{report}");
    for home in [&tasmota, &dsmr] {
        let bill = released
            .iter()
            .find(|b| b["meter_id"] == home.meter)
            .unwrap_or_else(|| panic!("no bill for {}: {report}", home.meter));
        assert_eq!(bill["closing_sequence"], BATCHES, "{report}");
        let amount = bill["amount_paise"].as_i64().expect("amount in paise");
        let oracle = home.oracle_paise();
        assert_eq!(
            amount,
            oracle,
            "{}: released ₹{:.2}, plaintext tariff ₹{:.2}",
            home.meter,
            amount as f64 / 100.0,
            oracle as f64 / 100.0
        );
    }
    eprintln!(
        "seed {seed}: kills at {kills:?} of {expected} samples; both bills equal the plaintext \
         tariff; {:.1?} in all",
        started.elapsed()
    );
}

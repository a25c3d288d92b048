//! The dashboard's pages.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, NaiveDateTime, TimeDelta, Utc};
use seer_auth::Caller;
use seer_core::battery::{self, Battery};
use seer_core::data::{Interval, Period};
use seer_core::tariff::ExactAmount;
use seer_core::units::Wh;
use seer_web::chart::{Chart, Mark, Series};
use seer_web::page::{kwh, rupees};
use seer_web::{Authenticated, Layout, NavItem, escape};
use serde::Deserialize;

use super::preview::{self, EPSILON_RANGE, Preview};
use super::{DashboardState, attachment, bad_request, internal};
use crate::batch::QueuedReading;
use crate::error::Error;

const NAV: &[NavItem] = &[
    NavItem {
        href: "/",
        label: "My readings",
    },
    NavItem {
        href: "/results",
        label: "Bills and forecasts",
    },
    NavItem {
        href: "/battery",
        label: "Battery what-if",
    },
];

/// Readings shown in the table and previewed (a day of 15-minute readings).
const TABLE_READINGS: usize = 96;
/// Days in the chart.
const CHART_DAYS: i64 = 7;

fn layout<'a>(caller: &'a Caller, active: &'a str) -> Layout<'a> {
    Layout {
        app: "SEER household",
        nav: NAV,
        active,
        viewer: Some(caller),
    }
}

/// The last `days` days of readings up to the latest one.
async fn recent(state: &DashboardState, days: i64) -> Result<Vec<QueuedReading>, Error> {
    let Some((latest, _)) = state.reader.latest().await? else {
        return Ok(Vec::new());
    };
    let to = latest + TimeDelta::seconds(1);
    let from = (latest.date() - TimeDelta::days(days - 1))
        .and_hms_opt(0, 0, 0)
        .unwrap_or(latest);
    state.reader.readings(from, to).await
}

/// A fresh preview at `epsilon` of the latest [`TABLE_READINGS`] readings.
pub(super) async fn preview_at(state: &DashboardState, epsilon: f64) -> Result<Preview, Error> {
    let readings = recent(state, 2).await?;
    let tail = &readings[readings.len().saturating_sub(TABLE_READINGS)..];
    preview_of(state, tail, epsilon).await
}

/// A fresh preview at `epsilon` of `tail`.
async fn preview_of(
    state: &DashboardState,
    tail: &[QueuedReading],
    epsilon: f64,
) -> Result<Preview, Error> {
    let accountant = state.reader.accountant().await?;
    let mut rng = seer_core::dp::os_seeded_rng()?;
    preview::preview(
        tail,
        state.settings.sensitivity,
        epsilon,
        accountant.as_ref(),
        state.settings.monthly_budget,
        &mut rng,
    )
}

pub(super) async fn home(state: &DashboardState, caller: &Caller) -> Response {
    match home_body(state).await {
        Ok(body) => layout(caller, "/")
            .render("My readings", &body)
            .into_response(),
        Err(e) => internal(&e),
    }
}

async fn home_body(state: &DashboardState) -> Result<String, Error> {
    let readings = recent(state, CHART_DAYS).await?;
    let accountant = state.reader.accountant().await?;
    let mut b = String::new();
    let Some(last) = readings.last() else {
        b.push_str("<p data-testid=\"no-readings\">No readings batched yet.</p>");
        return Ok(b);
    };
    let _ = write!(
        b,
        "<section><h2>Latest</h2><p>Last reading <span data-testid=\"latest-start\">{}</span>: \
         <span data-testid=\"latest-wh\">{}</span> Wh, in batch \
         <span data-testid=\"latest-sequence\">{}</span>. \
         <a href=\"/espi.xml\" id=\"download-my-data\" data-testid=\"download-my-data\">\
         Download my data (Green Button)</a></p></section>",
        last.start.format("%Y-%m-%d %H:%M"),
        last.energy.get(),
        last.sequence
    );
    // Chart: each day's kWh, and the latest day's readings as sent.
    let mut per_day: Vec<(NaiveDate, i64)> = Vec::new();
    for r in &readings {
        match per_day.last_mut() {
            Some((d, wh)) if *d == r.start.date() => *wh += r.energy.get(),
            _ => per_day.push((r.start.date(), r.energy.get())),
        }
    }
    let daily = Chart {
        id: "chart-daily".into(),
        title: "Energy per day".into(),
        y_label: "kWh".into(),
        series: vec![Series {
            name: "kWh".into(),
            points: per_day
                .iter()
                .enumerate()
                .map(|(i, (_, wh))| (i as f64, *wh as f64 / 1000.0))
                .collect(),
            mark: Mark::Bars,
        }],
        x_ticks: per_day
            .iter()
            .enumerate()
            .map(|(i, (d, _))| (i as f64, d.format("%m-%d").to_string()))
            .collect(),
        limit: None,
    };
    let day = last.start.date();
    let today: Vec<&QueuedReading> = readings.iter().filter(|r| r.start.date() == day).collect();
    let hour = |r: &QueuedReading| {
        f64::from(chrono::Timelike::num_seconds_from_midnight(&r.start.time())) / 3600.0
    };
    let lanes = Chart {
        id: "chart-lanes".into(),
        title: format!("Readings and the analytics lane as sent, {day}"),
        y_label: "Wh".into(),
        series: vec![
            Series {
                name: "reading".into(),
                points: today
                    .iter()
                    .map(|r| (hour(r), r.energy.get() as f64))
                    .collect(),
                mark: Mark::Line,
            },
            Series {
                name: "analytics lane (reading + noise share)".into(),
                points: today
                    .iter()
                    .filter_map(|r| Some((hour(r), r.analytics? as f64)))
                    .collect(),
                mark: Mark::Line,
            },
        ],
        x_ticks: (0..=24)
            .step_by(3)
            .map(|h| (f64::from(h), format!("{h:02}:00")))
            .collect(),
        limit: None,
    };
    let _ = write!(
        b,
        "<section><h2>Last {CHART_DAYS} days</h2>{}{}</section>",
        daily.render(),
        lanes.render()
    );
    // Privacy and the ε control.
    let eps = state.settings.epsilon.get();
    let tail = &readings[readings.len().saturating_sub(TABLE_READINGS)..];
    let p = preview_of(state, tail, eps).await?;
    let (spent, left, budget) = accountant.as_ref().map_or(
        (
            0.0,
            state.settings.monthly_budget.get(),
            state.settings.monthly_budget.get(),
        ),
        |a| (a.spent(), a.remaining(), a.budget().get()),
    );
    let _ = write!(
        b,
        "<section id=\"privacy\"><h2>Privacy</h2>\
         <p>This month: ε spent <span data-testid=\"epsilon-spent\">{spent:.4}</span> of \
         <span data-testid=\"epsilon-budget\">{budget:.4}</span>, \
         <span data-testid=\"epsilon-left\">{left:.4}</span> left. Your readings leave this \
         machine at ε = <span data-testid=\"epsilon-configured\">{eps}</span> per reading, \
         clamped to Δ = {delta} Wh.</p>\
         <label for=\"epsilon\">Preview at ε = <output data-testid=\"preview-epsilon\">{eps:.3}</output></label>\
         <input type=\"range\" id=\"epsilon\" name=\"epsilon\" min=\"{lo}\" max=\"{hi}\" step=\"0.001\" value=\"{eps}\">\
         <p class=\"muted\">The preview draws fresh noise on this machine; it is never sent or \
         stored.</p>\
         <p>Noise scale Δ/ε: <span data-testid=\"preview-scale\">{scale:.1}</span> Wh · mean \
         absolute noise of this preview: <span data-testid=\"preview-mae\">{mae:.1}</span> Wh · \
         readings the month's budget still allows at this ε: \
         <span data-testid=\"preview-readings-left\">{readings_left}</span>\
         <span data-testid=\"preview-error\"></span></p>",
        delta = state.settings.sensitivity.get(),
        lo = EPSILON_RANGE.0,
        hi = 1.0_f64.max(eps * 4.0).min(EPSILON_RANGE.1),
        scale = p.scale_wh,
        mae = p.mean_abs_noise_wh,
        readings_left = p.readings_left,
    );
    // The readings table, newest first, with the lane as sent and the preview.
    b.push_str(
        "<table id=\"readings\"><thead><tr><th>Start</th><th>Reading (Wh)</th>\
         <th>Analytics lane as sent (Wh)</th><th>Preview at ε (Wh)</th><th>Batch</th></tr>\
         </thead><tbody id=\"preview-rows\">",
    );
    for (r, q) in tail.iter().zip(&p.points) {
        let start = r.start.format("%Y-%m-%dT%H:%M").to_string();
        let _ = write!(
            b,
            "<tr data-testid=\"reading-row\" data-start=\"{start}\"><td>{start}</td>\
             <td data-testid=\"reading-wh\">{}</td><td data-testid=\"reading-sent\">{}</td>\
             <td data-testid=\"preview-noisy\">{}</td><td>{}</td></tr>",
            r.energy.get(),
            r.analytics
                .map_or_else(|| "—".to_owned(), |v| v.to_string()),
            q.noisy_wh,
            r.sequence
        );
    }
    b.push_str("</tbody></table></section>");
    b.push_str("<script src=\"/static/household.js\" defer></script>");
    Ok(b)
}

#[derive(Debug, Deserialize)]
pub(super) struct BatteryQuery {
    capacity: Option<String>,
    power: Option<String>,
    efficiency: Option<String>,
    period: Option<String>,
}

fn parse_num(text: Option<&str>, default: f64, what: &str) -> Result<f64, String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(default),
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("{what} must be a positive number, not {t:?}")),
    }
}

#[tracing::instrument(name = "dashboard.battery", skip_all)]
pub(super) async fn battery(
    State(state): State<DashboardState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<BatteryQuery>,
) -> Response {
    let inputs = (|| -> Result<(f64, f64, f64), String> {
        Ok((
            parse_num(q.capacity.as_deref(), 5.0, "capacity (kWh)")?,
            parse_num(q.power.as_deref(), 2.5, "power (kW)")?,
            parse_num(q.efficiency.as_deref(), 90.0, "efficiency (%)")?,
        ))
    })();
    let (capacity, power, efficiency) = match inputs {
        Ok(v) => v,
        Err(reason) => return bad_request(&reason),
    };
    let battery = match Battery::try_new(
        Wh::try_new((capacity * 1000.0).round() as i64).unwrap_or(Wh::MAX),
        (power * 1000.0).round().min(f64::from(u32::MAX)) as u32,
        efficiency.round().min(1000.0) as u32,
    ) {
        Ok(b) => b,
        Err(e) => return bad_request(&e.to_string()),
    };
    let latest = match state.reader.latest().await {
        Ok(l) => l,
        Err(e) => return internal(&e),
    };
    let period = match (&q.period, latest) {
        (Some(p), _) if !p.trim().is_empty() => match p.trim().parse::<Period>() {
            Ok(p) => Some(p),
            Err(e) => return bad_request(&e.to_string()),
        },
        (_, Some((t, _))) => Period::containing(t.date()).ok(),
        _ => None,
    };
    let mut b = format!(
        "<form method=\"get\" action=\"/battery\" id=\"battery-form\">\
         <label for=\"battery-capacity\">Capacity (kWh)</label>\
         <input id=\"battery-capacity\" name=\"capacity\" type=\"number\" min=\"0.1\" step=\"0.1\" value=\"{capacity}\">\
         <label for=\"battery-power\">Power (kW)</label>\
         <input id=\"battery-power\" name=\"power\" type=\"number\" min=\"0.1\" step=\"0.1\" value=\"{power}\">\
         <label for=\"battery-efficiency\">Round-trip efficiency (%)</label>\
         <input id=\"battery-efficiency\" name=\"efficiency\" type=\"number\" min=\"1\" max=\"100\" step=\"1\" value=\"{efficiency}\">\
         <label for=\"battery-period\">Month</label>\
         <input id=\"battery-period\" name=\"period\" value=\"{}\">\
         <button type=\"submit\" id=\"battery-run\">Run the what-if</button></form>",
        period.map(|p| p.to_string()).unwrap_or_default()
    );
    let tariff = &state.settings.tariff;
    let _ = write!(
        b,
        "<p class=\"muted\">Tariff: {} — the battery charges in the cheapest time-of-use band and \
         discharges in the dearest, never exporting.</p>",
        escape(tariff.name())
    );
    if let Some(period) = period {
        let from = period.first_day().and_hms_opt(0, 0, 0);
        let to = period.end();
        let readings = match from {
            Some(from) => state.reader.readings(from, to).await,
            None => Ok(Vec::new()),
        };
        let readings = match readings {
            Ok(r) => r,
            Err(e) => return internal(&e),
        };
        let series: Vec<(NaiveDateTime, Wh)> =
            readings.iter().map(|r| (r.start, r.energy)).collect();
        let interval = readings
            .first()
            .and_then(|r| Interval::try_from_secs(r.interval_s).ok())
            .unwrap_or(Interval::FIFTEEN_MINUTES);
        if series.is_empty() {
            b.push_str("<p data-testid=\"battery-empty\">No readings in that month.</p>");
        } else {
            match battery::what_if(tariff, &battery, interval, &series) {
                Ok(r) => {
                    // Each bill rounded once to the paisa, as billed; the saving is their
                    // difference.
                    let paise = |a: ExactAmount| a.round_to_paise().get();
                    let saving_paise = paise(r.without.amount()) - paise(r.with.amount());
                    let _ = write!(
                        b,
                        "<table id=\"battery-results\"><tbody>\
                         <tr><th>Bill without the battery</th><td data-testid=\"bill-without\">{}</td></tr>\
                         <tr><th>Bill with the battery</th><td data-testid=\"bill-with\">{}</td></tr>\
                         <tr><th>Saving</th><td data-testid=\"saving\">{}</td></tr>\
                         <tr><th>kWh shifted</th><td data-testid=\"kwh-shifted\">{}</td></tr>\
                         <tr><th>kWh charged</th><td data-testid=\"kwh-charged\">{}</td></tr>\
                         <tr><th>Losses (kWh)</th><td data-testid=\"losses\">{:.3}</td></tr>\
                         <tr><th>Readings</th><td data-testid=\"battery-readings\">{}</td></tr>\
                         </tbody></table>",
                        rupees(paise(r.without.amount())),
                        rupees(paise(r.with.amount())),
                        rupees(saving_paise),
                        kwh(r.discharged.get()),
                        kwh(r.charged.get()),
                        r.losses_kwh(),
                        series.len()
                    );
                }
                Err(e) => {
                    let _ = write!(
                        b,
                        "<p class=\"alert\" data-testid=\"battery-error\">{}</p>",
                        escape(&e.to_string())
                    );
                }
            }
        }
    }
    layout(&caller, "/battery")
        .render("Battery what-if", &b)
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct EspiQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /espi.xml?from=YYYY-MM-DD&to=YYYY-MM-DD`: the readings of `[from, to)` (default: all).
#[tracing::instrument(name = "dashboard.espi", skip_all)]
pub(super) async fn espi(
    State(state): State<DashboardState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<EspiQuery>,
) -> Response {
    let day = |t: Option<&str>, default: NaiveDate| -> Result<NaiveDate, String> {
        match t.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(default),
            Some(t) => seer_core::parse_day(t).map_err(|e| e.to_string()),
        }
    };
    let lo = NaiveDate::from_ymd_opt(1000, 1, 1).unwrap_or_default();
    let hi = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or_default();
    let (from, to) = match (day(q.from.as_deref(), lo), day(q.to.as_deref(), hi)) {
        (Ok(f), Ok(t)) if f < t => (f, t),
        (Ok(_), Ok(_)) => return bad_request("from must be before to"),
        (Err(e), _) | (_, Err(e)) => return bad_request(&e),
    };
    let (Some(from_t), Some(to_t)) = (from.and_hms_opt(0, 0, 0), to.and_hms_opt(0, 0, 0)) else {
        return bad_request("bad date range");
    };
    let readings = match state.reader.readings(from_t, to_t).await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let meter = caller.meter_id().unwrap_or("meter").to_owned();
    let export = crate::espi::Export {
        meter_id: &meter,
        utc_offset: state.settings.utc_offset,
        updated: Utc::now().naive_utc(),
    };
    match crate::espi::feed(&export, &readings) {
        Ok(xml) => (
            [
                (
                    CONTENT_TYPE,
                    "application/atom+xml; charset=utf-8".to_owned(),
                ),
                (CACHE_CONTROL, "no-store".to_owned()),
            ],
            [attachment(&format!("greenbutton-{meter}.xml"))],
            xml,
        )
            .into_response(),
        Err(e) => internal(&e),
    }
}

/// `GET /results`: the home's released bills (slab by slab), its forecasts against the actual
/// readings and its anomaly flags with their explanations, from the utility.
#[tracing::instrument(name = "dashboard.results", skip_all)]
pub(super) async fn results(
    State(state): State<DashboardState>,
    Authenticated(caller): Authenticated,
) -> Response {
    let layout = layout(&caller, "/results");
    let Some(access) = &state.settings.utility else {
        return layout
            .render(
                "Bills and forecasts",
                "<p data-testid=\"results-disabled\">Start the dashboard with <code>--utility \
                 URL</code> (and the household token in <code>SEER_METER_TOKEN</code>) to see \
                 your released bills, forecasts and anomaly flags.</p>",
            )
            .into_response();
    };
    let meter = caller.meter_id().unwrap_or_default().to_owned();
    let latest = match state.reader.latest().await {
        Ok(l) => l.map_or_else(|| Utc::now().date_naive(), |(t, _)| t.date()),
        Err(e) => return internal(&e),
    };
    let (from, to) = (latest - TimeDelta::days(13), latest + TimeDelta::days(2));
    let released = match super::utility::fetch(access, &meter, from, to).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: the utility did not answer");
            return layout
                .render(
                    "Bills and forecasts",
                    &format!(
                        "<p class=\"alert\" data-testid=\"results-error\">The utility did not \
                         answer: {}</p>",
                        escape(&e.to_string())
                    ),
                )
                .into_response();
        }
    };
    let mut b = String::from("<section><h2>Released bills</h2>");
    if released.bills.is_empty() {
        b.push_str("<p data-testid=\"no-bills\">No bill released yet.</p>");
    }
    for bill in &released.bills {
        let period = escape(&bill.period);
        let _ = write!(
            b,
            "<h3>{period}</h3><p>Amount <strong data-testid=\"bill-amount-{period}\">{}</strong> \
             · released <span data-testid=\"bill-released-{period}\">{}</span> (audit entry {})</p>\
             <table><thead><tr><th>Slab</th><th>kWh</th></tr></thead><tbody>",
            rupees(bill.amount_paise),
            chrono::DateTime::from_timestamp_micros(bill.released_at_us)
                .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
            bill.audit_sequence
        );
        for (n, slab) in bill.slabs.iter().enumerate() {
            let _ = write!(
                b,
                "<tr><td>{}</td><td data-testid=\"slab-kwh-{period}-{n}\">{}</td></tr>",
                escape(&slab.label),
                kwh(i64::try_from(slab.wh).unwrap_or(i64::MAX))
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
    // Forecasts against the actual readings, hour by hour.
    let readings = match (from.and_hms_opt(0, 0, 0), to.and_hms_opt(0, 0, 0)) {
        (Some(f), Some(t)) => state.reader.readings(f, t).await,
        _ => Ok(Vec::new()),
    };
    let readings = match readings {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let mut actual: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for r in &readings {
        *actual
            .entry(r.start.format("%Y-%m-%dT%H:00").to_string())
            .or_default() += r.energy.get();
    }
    b.push_str("<section><h2>Forecasts against your use</h2>");
    if released.forecasts.is_empty() {
        b.push_str("<p data-testid=\"no-forecasts\">No forecast released for these days.</p>");
    } else {
        let points = |f: &dyn Fn(&str) -> Option<f64>| -> Vec<(f64, f64)> {
            released
                .forecasts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| Some((i as f64, f(&h.hour)?)))
                .collect()
        };
        let by_hour: std::collections::BTreeMap<&str, i64> = released
            .forecasts
            .iter()
            .map(|h| (h.hour.as_str(), h.kwh_milli))
            .collect();
        let chart = Chart {
            id: "chart-forecast".into(),
            title: "Forecast against actual, per hour".into(),
            y_label: "kWh".into(),
            series: vec![
                Series {
                    name: "forecast".into(),
                    points: points(&|h| by_hour.get(h).map(|v| *v as f64 / 1000.0)),
                    mark: Mark::Line,
                },
                Series {
                    name: "actual".into(),
                    points: points(&|h| actual.get(h).map(|v| *v as f64 / 1000.0)),
                    mark: Mark::Line,
                },
            ],
            x_ticks: released
                .forecasts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.hour.ends_with("T00:00"))
                .map(|(i, h)| (i as f64, h.hour[5..10].to_owned()))
                .collect(),
            limit: None,
        };
        b.push_str(&chart.render());
        b.push_str(
            "<table id=\"forecasts\"><thead><tr><th>Hour</th><th>Forecast (kWh)</th>\
             <th>Actual (kWh)</th></tr></thead><tbody>",
        );
        for h in &released.forecasts {
            let hour = escape(&h.hour);
            let _ = write!(
                b,
                "<tr data-testid=\"forecast-row\"><td>{hour}</td>\
                 <td data-testid=\"forecast-kwh-{hour}\">{}</td>\
                 <td data-testid=\"actual-kwh-{hour}\">{}</td></tr>",
                kwh(h.kwh_milli),
                actual
                    .get(&h.hour)
                    .map_or_else(|| "—".to_owned(), |wh| kwh(*wh))
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section><section><h2>Unusual days</h2>");
    if released.anomalies.is_empty() {
        b.push_str(
            "<p data-testid=\"no-anomalies\">No anomaly result released for these days.</p>",
        );
    } else {
        b.push_str(
            "<table id=\"anomalies\"><thead><tr><th>Day</th><th>Score</th><th>Flagged</th>\
             <th>Why</th></tr></thead><tbody>",
        );
        for a in &released.anomalies {
            let day = escape(&a.day);
            let _ = write!(
                b,
                "<tr data-testid=\"anomaly-row\"><td>{day}</td>\
                 <td data-testid=\"anomaly-score-{day}\">{:.3}</td>\
                 <td data-testid=\"anomaly-flag-{day}\">{}</td>\
                 <td data-testid=\"anomaly-why-{day}\">{}</td></tr>",
                a.score_milli as f64 / 1000.0,
                if a.flagged { "flagged" } else { "no" },
                escape(&super::utility::explanation_text(&a.explanation_json))
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
    layout.render("Bills and forecasts", &b).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct StatementQuery {
    period: Option<String>,
}

/// `GET /statement.pdf?period=YYYY-MM`: the month's statement from the released bill (its
/// slabs and amount, from the utility), the daily usage (this meter's readings) and the
/// privacy facts (ε spent from the privacy ledger; the releases and when they were granted).
#[tracing::instrument(name = "dashboard.statement", skip_all)]
pub(super) async fn statement(
    State(state): State<DashboardState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<StatementQuery>,
) -> Response {
    let period = match q.period.as_deref().map(str::trim).map(str::parse::<Period>) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return bad_request(&e.to_string()),
        None => return bad_request("period=YYYY-MM is required"),
    };
    let Some(access) = &state.settings.utility else {
        return bad_request("the statement needs the released bill: start with --utility URL");
    };
    let meter = caller.meter_id().unwrap_or_default().to_owned();
    let first = period.first_day();
    let next = period.end().date();
    let released = match super::utility::fetch(access, &meter, first, next).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: the utility did not answer");
            return (
                axum::http::StatusCode::BAD_GATEWAY,
                format!("the utility did not answer: {e}\n"),
            )
                .into_response();
        }
    };
    let Some(bill) = released
        .bills
        .iter()
        .find(|b| b.period == period.to_string())
    else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            format!("no bill released for {period} yet\n"),
        )
            .into_response();
    };
    let readings = match first.and_hms_opt(0, 0, 0) {
        Some(from) => state.reader.readings(from, period.end()).await,
        None => Ok(Vec::new()),
    };
    let ledger = state.reader.ledger(first, next).await;
    let (readings, ledger) = match (readings, ledger) {
        (Ok(r), Ok(l)) => (r, l),
        (Err(e), _) | (_, Err(e)) => return internal(&e),
    };
    let mut daily: Vec<(String, f64)> = Vec::new();
    for r in &readings {
        let day = r.start.date().to_string();
        match daily.last_mut() {
            Some((d, kwh)) if *d == day => *kwh += r.energy.get() as f64 / 1000.0,
            _ => daily.push((day, r.energy.get() as f64 / 1000.0)),
        }
    }
    let epsilon_spent: f64 = ledger
        .iter()
        .map(|d| d.readings as f64 * d.epsilon_per_reading)
        .sum();
    let tariff = &state.settings.tariff;
    let cells = bill.slabs.iter().map(|s| (s.label.clone(), s.wh));
    let slabs = seer_statement::SlabLine::priced_or_unpriced(tariff, cells);
    // The bill is the release whose grant time the utility returns; the daily results carry
    // their audit entries but no time, so they are not listed here.
    let releases = vec![seer_statement::ReleaseFact {
        what: format!("bill {period} (audit entry {})", bill.audit_sequence),
        when: chrono::DateTime::from_timestamp_micros(bill.released_at_us).unwrap_or_default(),
    }];
    let meter_id = match seer_core::MeterId::try_new(meter.clone()) {
        Ok(m) => m,
        Err(e) => return bad_request(&e.to_string()),
    };
    let statement = seer_statement::Statement {
        meter_id,
        period,
        tariff_name: tariff.name().to_owned(),
        slabs,
        total_paise: bill.amount_paise,
        daily_kwh: daily,
        privacy: seer_statement::PrivacyFacts {
            epsilon_spent,
            epsilon_budget: Some(state.settings.monthly_budget.get()),
            releases,
        },
        issued_at: Utc::now(),
    };
    match seer_statement::render_pdf(&statement) {
        Ok(pdf) => (
            [
                (CONTENT_TYPE, "application/pdf".to_owned()),
                (CACHE_CONTROL, "no-store".to_owned()),
            ],
            [attachment(&format!("statement-{meter}-{period}.pdf"))],
            pdf,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot render the statement");
            bad_request(&e.to_string())
        }
    }
}

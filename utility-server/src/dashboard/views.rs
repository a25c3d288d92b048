//! The dashboard's pages. Each handler checks the viewer ([`access`](super::access)), runs
//! one aggregating store query (two at most) and renders HTML; every important number carries
//! a `data-testid` (listed in the crate's dashboard documentation).

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{Duration as ChronoDuration, Utc};
use seer_web::chart::{Chart, Mark, Series};
use seer_web::page::{kwh, rupees};
use seer_web::{Authenticated, Layout, NavItem, escape};
use serde::Deserialize;

use super::DashboardState;
use super::access::{Page, Viewer};
use super::csv::csv_line;
use crate::batch::{MeterId, Period};
use crate::store::{GroupHour, HomeRow, HomeSort, HomesQuery, StoreError};

/// Rows per page of the homes table when `per_page` is not given.
pub const DEFAULT_PER_PAGE: u64 = 50;
/// Most rows per page.
pub const MAX_PER_PAGE: u64 = 500;
/// Most flagged days one page lists.
const MAX_FLAGGED: u32 = 500;

const NAV: [(Page, NavItem); 7] = [
    (
        Page::Overview,
        NavItem {
            href: "/",
            label: "Overview",
        },
    ),
    (
        Page::Homes,
        NavItem {
            href: "/homes",
            label: "Homes",
        },
    ),
    (
        Page::Billing,
        NavItem {
            href: "/billing",
            label: "Billing",
        },
    ),
    (
        Page::Forecasting,
        NavItem {
            href: "/forecasting",
            label: "Forecasting",
        },
    ),
    (
        Page::Anomalies,
        NavItem {
            href: "/anomalies",
            label: "Anomalies",
        },
    ),
    (
        Page::Grid,
        NavItem {
            href: "/grid",
            label: "Grid health",
        },
    ),
    (
        Page::Ingest,
        NavItem {
            href: "/ingest",
            label: "Ingest",
        },
    ),
];

pub(super) fn routes() -> Router<DashboardState> {
    Router::new()
        .route("/", get(overview))
        .route("/homes", get(homes))
        .route("/homes.csv", get(homes_csv))
        .route("/homes/{meter}", get(home))
        .route("/homes/{meter}/statement.pdf", get(statement))
        .route("/billing", get(billing))
        .route("/forecasting", get(forecasting))
        .route("/anomalies", get(anomalies))
        .route("/grid", get(grid))
        .route("/ingest", get(ingest))
}

/// Why a page is not shown.
#[derive(Debug)]
enum PageError {
    /// The viewer's role may not see it (403).
    Forbidden(String),
    /// A query parameter is malformed (400).
    BadRequest(String),
    /// The store failed (500; the detail is logged, not shown).
    Store(StoreError),
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::Forbidden(reason) => seer_web::session::Forbidden(reason).into_response(),
            Self::BadRequest(reason) => {
                (StatusCode::BAD_REQUEST, format!("bad request: {reason}\n")).into_response()
            }
            Self::Store(error) => {
                tracing::error!(%error, cause = ?std::error::Error::source(&error), "dashboard: store failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "the database failed\n").into_response()
            }
        }
    }
}

type PageResult = Result<Response, PageError>;

/// The viewer of `caller`, if it may open `page`.
fn admit(caller: &seer_auth::Caller, page: Page) -> Result<Viewer, PageError> {
    let viewer = Viewer::of(caller)
        .ok_or_else(|| PageError::Forbidden("a household token without a meter".into()))?;
    if viewer.may_open(page) {
        Ok(viewer)
    } else {
        Err(PageError::Forbidden(format!(
            "this page is not open to the {} role",
            caller.role().as_str()
        )))
    }
}

fn render(caller: &seer_auth::Caller, active: &str, title: &str, body: &str) -> Response {
    let viewer = Viewer::of(caller);
    let nav: Vec<NavItem> = NAV
        .iter()
        .filter(|(page, _)| viewer.as_ref().is_some_and(|v| v.may_open(*page)))
        .map(|(_, item)| *item)
        .collect();
    Layout {
        app: "SEER utility",
        nav: &nav,
        active,
        viewer: Some(caller),
    }
    .render(title, body)
    .into_response()
}

/// The query parameters the pages read.
#[derive(Debug, Default, Deserialize)]
struct Params {
    period: Option<String>,
    page: Option<u64>,
    per_page: Option<u64>,
    sort: Option<String>,
    dir: Option<String>,
    day: Option<String>,
}

/// `?period=` parsed, else the latest period with a bill or a batch, else this month.
async fn period_of(state: &DashboardState, params: &Params) -> Result<Period, PageError> {
    if let Some(text) = params.period.as_deref().filter(|t| !t.is_empty()) {
        return text
            .parse()
            .map_err(|_| PageError::BadRequest(format!("period {text:?} is not YYYY-MM")));
    }
    if let Some(latest) = state.store.dashboard_latest_period().await? {
        return Ok(latest);
    }
    Utc::now()
        .format("%Y-%m")
        .to_string()
        .parse()
        .map_err(|_| PageError::BadRequest("no period".into()))
}

/// `?day=` checked (`YYYY-MM-DD`), else the latest day with a released group result.
async fn day_of(state: &DashboardState, params: &Params) -> Result<Option<String>, PageError> {
    match params.day.as_deref().filter(|t| !t.is_empty()) {
        Some(text) => seer_core::parse_day(text)
            .map(|day| Some(seer_core::format_day(day)))
            .map_err(|_| PageError::BadRequest(format!("day {text:?} is not YYYY-MM-DD"))),
        None => Ok(state.store.dashboard_latest_group_day().await?),
    }
}

fn utc_text(micros: Option<i64>) -> String {
    micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map_or_else(
            || "—".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

fn opt_kwh(wh: Option<u64>) -> String {
    wh.map_or_else(
        || "—".to_owned(),
        |wh| kwh(i64::try_from(wh).unwrap_or(i64::MAX)),
    )
}

fn opt_rupees(paise: Option<i64>) -> String {
    paise.map_or_else(|| "—".to_owned(), rupees)
}

fn stat(id: &str, label: &str, value: &str) -> String {
    format!(
        "<div class=\"stat\"><span class=\"label\">{}</span>\
         <span class=\"value\" id=\"{id}\" data-testid=\"{id}\">{}</span></div>",
        escape(label),
        escape(value)
    )
}

// ---------------------------------------------------------------------------------------
// Overview

#[tracing::instrument(name = "dashboard.overview", skip_all)]
async fn overview(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    if let Some(Viewer::Household(own)) = Viewer::of(&caller) {
        // A household's overview is its own home.
        let target = format!("/homes/{own}");
        return Ok((StatusCode::SEE_OTHER, [(LOCATION, target)]).into_response());
    }
    admit(&caller, Page::Overview)?;
    let period = period_of(&state, &params).await?;
    let counts = state.store.dashboard_overview(period).await?;
    let day = day_of(&state, &params).await?;
    let hours = match &day {
        Some(day) => state.store.dashboard_group_hours(day).await?,
        None => Vec::new(),
    };
    let mut body = format!(
        "<p>Period <strong data-testid=\"period\">{period}</strong>. Numbers are the key \
         authority's releases and the utility's own counts; nothing here was decrypted by the \
         utility.</p><div class=\"stats\">"
    );
    body.push_str(&stat("homes", "Homes", &counts.homes.to_string()));
    body.push_str(&stat(
        "billed-kwh",
        "Energy billed (kWh)",
        &kwh(i64::try_from(counts.billed_wh).unwrap_or(i64::MAX)),
    ));
    body.push_str(&stat(
        "billed-amount",
        "Amount billed",
        &rupees(counts.billed_paise),
    ));
    body.push_str(&stat(
        "bills-released",
        "Bills released",
        &counts.bills_released.to_string(),
    ));
    body.push_str(&stat(
        "bills-refused",
        "Bills refused",
        &counts.bills_refused.to_string(),
    ));
    body.push_str(&stat(
        "anomalies-flagged",
        "Anomalies flagged",
        &counts.anomalies_flagged.to_string(),
    ));
    body.push_str(&stat(
        "batches",
        "Batches stored",
        &counts.batches.to_string(),
    ));
    body.push_str("</div>");
    // All groups summed per hour.
    let mut forecast = std::collections::BTreeMap::<u32, f64>::new();
    let mut actual = std::collections::BTreeMap::<u32, f64>::new();
    for h in &hours {
        let hour = hour_of(&h.hour);
        if let Some(f) = h.forecast_milli_kwh {
            *forecast.entry(hour).or_default() += f as f64 / 1000.0;
        }
        if let Some(a) = h.actual_wh {
            *actual.entry(hour).or_default() += a as f64 / 1000.0;
        }
    }
    let title = format!(
        "Forecast against actual, all groups, {}",
        day.as_deref().unwrap_or("no day released yet")
    );
    body.push_str(&format!("<h2>{}</h2>", escape(&title)));
    body.push_str(&hour_chart(
        "overview-chart",
        &title,
        &forecast,
        &actual,
        None,
    ));
    Ok(render(&caller, "/", "Overview", &body))
}

fn hour_of(hour: &str) -> u32 {
    hour.get(11..13).and_then(|h| h.parse().ok()).unwrap_or(0)
}

fn hour_chart(
    id: &str,
    title: &str,
    forecast: &std::collections::BTreeMap<u32, f64>,
    actual: &std::collections::BTreeMap<u32, f64>,
    limit: Option<(f64, String)>,
) -> String {
    Chart {
        id: id.to_owned(),
        title: title.to_owned(),
        y_label: "kWh per hour (average kW)".into(),
        series: vec![
            Series {
                name: "forecast".into(),
                points: forecast.iter().map(|(h, v)| (f64::from(*h), *v)).collect(),
                mark: Mark::Line,
            },
            Series {
                name: "actual".into(),
                points: actual.iter().map(|(h, v)| (f64::from(*h), *v)).collect(),
                mark: Mark::Line,
            },
        ],
        x_ticks: (0..24)
            .step_by(3)
            .map(|h| (f64::from(h), format!("{h:02}:00")))
            .collect(),
        limit,
    }
    .render()
}

// ---------------------------------------------------------------------------------------
// Homes

struct HomesView {
    period: Period,
    sort: HomeSort,
    descending: bool,
    page: u64,
    per_page: u64,
}

fn homes_view(
    state: &DashboardState,
    params: &Params,
    period: Period,
) -> Result<HomesView, PageError> {
    let sort = match params.sort.as_deref().filter(|s| !s.is_empty()) {
        Some(key) => HomeSort::parse(key, state.labels.len())
            .ok_or_else(|| PageError::BadRequest(format!("unknown sort column {key:?}")))?,
        None => HomeSort::Meter,
    };
    let descending = match params.dir.as_deref() {
        None | Some("" | "asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(PageError::BadRequest(format!(
                "dir {other:?} is neither asc nor desc"
            )));
        }
    };
    let per_page = params
        .per_page
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page = params.page.unwrap_or(1).max(1);
    Ok(HomesView {
        period,
        sort,
        descending,
        page,
        per_page,
    })
}

#[tracing::instrument(name = "dashboard.homes", skip_all)]
async fn homes(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    let viewer = admit(&caller, Page::Homes)?;
    let period = period_of(&state, &params).await?;
    let view = homes_view(&state, &params, period)?;
    let only = viewer
        .only_meter()
        .map(MeterId::try_new)
        .transpose()
        .map_err(|_| PageError::Forbidden("the token's meter id is not valid".into()))?;
    let body = render_homes(&state, &view, only.as_ref()).await?;
    Ok(render(&caller, "/homes", "Homes", &body))
}

/// The homes page's body.
async fn render_homes(
    state: &DashboardState,
    view: &HomesView,
    only: Option<&MeterId>,
) -> Result<String, PageError> {
    let total = state.store.dashboard_home_count(only).await?;
    let rows = state
        .store
        .dashboard_homes(&HomesQuery {
            period: view.period,
            cells: state.labels.len(),
            sort: view.sort,
            descending: view.descending,
            offset: (view.page - 1).saturating_mul(view.per_page),
            limit: Some(view.per_page),
            meter: only,
        })
        .await?;
    let pages = total.div_ceil(view.per_page).max(1);
    let mut body = String::with_capacity(256 * rows.len() + 2048);
    let _ = write!(
        body,
        "<p>Period <strong data-testid=\"period\">{period}</strong> · \
         <span data-testid=\"home-count\">{total}</span> homes · page \
         <span data-testid=\"page\">{page}</span> of <span data-testid=\"pages\">{pages}</span> · \
         <a id=\"csv-link\" href=\"/homes.csv?period={period}&amp;sort={sort}&amp;dir={dir}\">CSV</a></p>",
        period = view.period,
        page = view.page,
        sort = view.sort.key(),
        dir = if view.descending { "desc" } else { "asc" },
    );
    body.push_str("<table id=\"homes-table\" data-testid=\"homes-table\"><thead><tr>");
    let mut header = |key: HomeSort, label: &str| {
        let dir = if view.sort == key && !view.descending {
            "desc"
        } else {
            "asc"
        };
        let marker = if view.sort == key {
            if view.descending { " ▼" } else { " ▲" }
        } else {
            ""
        };
        let _ = write!(
            body,
            "<th><a data-testid=\"sort-{key}\" href=\"/homes?period={period}&amp;sort={key}&amp;dir={dir}&amp;per_page={per_page}\">{label}{marker}</a></th>",
            key = key.key(),
            period = view.period,
            per_page = view.per_page,
            label = escape(label),
        );
    };
    header(HomeSort::Meter, "Meter");
    for (cell, label) in state.labels.iter().enumerate() {
        header(HomeSort::Cell(cell), &format!("{label} (kWh)"));
    }
    header(HomeSort::TotalWh, "Total kWh");
    header(HomeSort::Amount, "Amount");
    header(HomeSort::LastBatch, "Last batch");
    header(HomeSort::Epsilon, "ε spent");
    header(HomeSort::Anomalies, "Anomalies");
    body.push_str("</tr></thead><tbody>");
    for row in &rows {
        home_row(&mut body, row);
    }
    body.push_str("</tbody></table>");
    let link = |page: u64, label: &str, id: &str| {
        format!(
            "<a id=\"{id}\" data-testid=\"{id}\" href=\"/homes?period={}&amp;sort={}&amp;dir={}&amp;page={page}&amp;per_page={}\">{label}</a> ",
            view.period,
            view.sort.key(),
            if view.descending { "desc" } else { "asc" },
            view.per_page
        )
    };
    body.push_str("<p class=\"pager\">");
    if view.page > 1 {
        body.push_str(&link(view.page - 1, "← previous", "page-previous"));
    }
    if view.page < pages {
        body.push_str(&link(view.page + 1, "next →", "page-next"));
    }
    body.push_str("</p>");
    Ok(body)
}

fn home_row(body: &mut String, row: &HomeRow) {
    let m = escape(&row.meter_id);
    let _ = write!(
        body,
        "<tr data-testid=\"home-row-{m}\"><td><a href=\"/homes/{m}\" data-testid=\"meter-{m}\">{m}</a></td>"
    );
    for (cell, wh) in row.cell_wh.iter().enumerate() {
        let _ = write!(
            body,
            "<td class=\"num\" data-testid=\"cell{cell}-{m}\">{}</td>",
            opt_kwh(*wh)
        );
    }
    let _ = write!(
        body,
        "<td class=\"num\" data-testid=\"kwh-{m}\">{}</td>\
         <td class=\"num\" data-testid=\"amount-{m}\">{}</td>\
         <td data-testid=\"last-batch-{m}\">{}</td>\
         <td class=\"num\" data-testid=\"epsilon-{m}\">{:.3}</td>\
         <td class=\"num\" data-testid=\"anomalies-{m}\">{}</td></tr>",
        opt_kwh(row.total_wh),
        opt_rupees(row.amount_paise),
        utc_text(row.last_batch_us),
        row.epsilon,
        row.anomalies
    );
}

#[tracing::instrument(name = "dashboard.homes_csv", skip_all)]
async fn homes_csv(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    let viewer = admit(&caller, Page::Homes)?;
    let period = period_of(&state, &params).await?;
    let view = homes_view(&state, &params, period)?;
    let only = viewer
        .only_meter()
        .map(MeterId::try_new)
        .transpose()
        .map_err(|_| PageError::Forbidden("the token's meter id is not valid".into()))?;
    let rows = state
        .store
        .dashboard_homes(&HomesQuery {
            period,
            cells: state.labels.len(),
            sort: view.sort,
            descending: view.descending,
            offset: 0,
            limit: None,
            meter: only.as_ref(),
        })
        .await?;
    let mut out = String::with_capacity(128 * (rows.len() + 1));
    let mut header: Vec<String> = vec!["meter_id".into()];
    header.extend(state.labels.iter().map(|l| format!("{l} kWh")));
    header.extend(
        [
            "total_kwh",
            "amount_rupees",
            "last_batch_utc",
            "batches",
            "epsilon_spent",
            "anomalies",
        ]
        .map(String::from),
    );
    out.push_str(&csv_line(&header));
    for row in &rows {
        let mut fields = vec![row.meter_id.clone()];
        fields.extend(row.cell_wh.iter().map(|wh| csv_kwh(*wh)));
        fields.push(csv_kwh(row.total_wh));
        fields.push(
            row.amount_paise
                .map(crate::store::format_rupees)
                .unwrap_or_default(),
        );
        fields.push(
            row.last_batch_us
                .and_then(chrono::DateTime::from_timestamp_micros)
                .map(crate::batch::utc_rfc3339)
                .unwrap_or_default(),
        );
        fields.push(row.batches.to_string());
        fields.push(format!("{}", row.epsilon));
        fields.push(row.anomalies.to_string());
        out.push_str(&csv_line(&fields));
    }
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"homes-{period}.csv\""),
            ),
        ],
        out,
    )
        .into_response())
}

fn csv_kwh(wh: Option<u64>) -> String {
    wh.map(crate::store::format_kwh).unwrap_or_default()
}

/// The id of the home a page names, for a viewer who may see it; one who may not is refused
/// before anything is looked up (the answer says nothing of whether it exists).
fn admit_home(caller: &seer_auth::Caller, meter: &str) -> Result<MeterId, PageError> {
    let viewer = admit(caller, Page::Homes)?;
    if !viewer.may_see_meter(meter) {
        return Err(PageError::Forbidden(
            "a household sees its own home only".into(),
        ));
    }
    let meter_id = MeterId::try_new(meter)
        .map_err(|_| PageError::BadRequest(format!("{meter:?} is not a meter id")))?;
    Ok(meter_id)
}

#[tracing::instrument(name = "dashboard.home", skip_all, fields(meter = %meter))]
async fn home(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Path(meter): Path<String>,
    Query(params): Query<Params>,
) -> PageResult {
    let meter_id = admit_home(&caller, &meter)?;
    let period = period_of(&state, &params).await?;
    let bills = state.store.meter_bills(&meter_id, None).await?;
    let summary = state.store.usage_summary(&meter_id, period).await?;
    let flagged = state
        .store
        .dashboard_flagged_days(Some(&meter_id), None, MAX_FLAGGED)
        .await?;
    let m = escape(meter_id.as_str());
    let mut body = String::new();
    body.push_str("<div class=\"stats\">");
    body.push_str(&stat(
        "home-batches",
        &format!("Batches in {period}"),
        &summary.batches.to_string(),
    ));
    body.push_str(&stat(
        "home-epsilon",
        &format!("ε spent in {period}"),
        &format!("{:.3}", summary.epsilon_spent),
    ));
    body.push_str(&stat(
        "home-flagged",
        "Flagged days",
        &flagged.len().to_string(),
    ));
    body.push_str("</div><h2>Released bills</h2>");
    if bills.is_empty() {
        body.push_str("<p class=\"muted\" data-testid=\"no-bills\">No bill released yet.</p>");
    }
    for bill in &bills {
        let p = bill.period;
        let _ = write!(
            body,
            "<h3>{p} <a class=\"statement\" data-testid=\"statement-{m}-{p}\" \
             href=\"/homes/{m}/statement.pdf?period={p}\">statement (PDF)</a></h3>\
             <table data-testid=\"bill-{m}-{p}\"><thead><tr><th>Cell</th><th>kWh</th></tr></thead><tbody>"
        );
        for (cell, slab) in bill.slabs.iter().enumerate() {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"num\" data-testid=\"bill-cell{cell}-{m}-{p}\">{}</td></tr>",
                escape(&slab.label),
                crate::store::format_kwh(slab.wh)
            );
        }
        let _ = write!(
            body,
            "</tbody><tfoot><tr><th>Total</th><td class=\"num\" data-testid=\"bill-kwh-{m}-{p}\">{}</td></tr>\
             <tr><th>Amount</th><td class=\"num\" data-testid=\"bill-amount-{m}-{p}\">{}</td></tr></tfoot></table>",
            crate::store::format_kwh(bill.total_wh()),
            rupees(bill.amount_paise)
        );
    }
    let forecast = state.store.dashboard_home_forecast(&meter_id).await?;
    body.push_str("<h2>Released next-day forecast</h2>");
    if forecast.is_empty() {
        body.push_str(
            "<p class=\"muted\" data-testid=\"no-forecast\">No forecast released yet.</p>",
        );
    } else {
        let day = forecast[0].0.get(..10).unwrap_or("").to_owned();
        let points: std::collections::BTreeMap<u32, f64> = forecast
            .iter()
            .map(|(hour, milli)| (hour_of(hour), *milli as f64 / 1000.0))
            .collect();
        body.push_str(&hour_chart(
            "home-forecast-chart",
            &format!("Forecast for {day}"),
            &points,
            &std::collections::BTreeMap::new(),
            None,
        ));
        let _ = write!(
            body,
            "<table data-testid=\"home-forecast-table\"><thead><tr><th>Hour of {}</th><th>kWh</th></tr></thead><tbody>",
            escape(&day)
        );
        for (hour, milli) in &forecast {
            let h = hour_of(hour);
            let _ = write!(
                body,
                "<tr><td>{h:02}:00</td><td class=\"num\" data-testid=\"home-forecast-{h:02}\">{}</td></tr>",
                kwh(*milli)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2>Flagged days</h2>");
    flagged_table(&mut body, &flagged);
    Ok(render(
        &caller,
        "/homes",
        &format!("Home {}", meter_id.as_str()),
        &body,
    ))
}

/// `GET /homes/{meter}/statement.pdf?period=YYYY-MM`: the month's statement of a home with a
/// released bill (`seer_statement`): usage by cell, the amount, and the privacy facts the
/// utility holds (ε its batches declared, the bill's release). The utility holds no daily
/// readings, so the chart says so.
#[tracing::instrument(name = "dashboard.statement", skip_all, fields(meter = %meter))]
async fn statement(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Path(meter): Path<String>,
    Query(params): Query<Params>,
) -> PageResult {
    let meter_id = admit_home(&caller, &meter)?;
    let period = period_of(&state, &params).await?;
    let pdf =
        match crate::statements::home_statement(&state.store, &state.tariff, &meter_id, period)
            .await
        {
            Ok(Some(pdf)) => pdf,
            Ok(None) => {
                return Ok((
                    StatusCode::NOT_FOUND,
                    format!("no bill of {} released for {period}\n", meter_id.as_str()),
                )
                    .into_response());
            }
            Err(crate::statements::StatementError::Store(error)) => return Err(error.into()),
            Err(error) => {
                tracing::error!(%error, "dashboard: rendering a statement");
                return Err(PageError::BadRequest(format!(
                    "the statement cannot be rendered: {error}"
                )));
            }
        };
    Ok((
        [
            (CONTENT_TYPE, "application/pdf".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"statement-{}-{period}.pdf\"",
                    meter_id.as_str()
                ),
            ),
        ],
        pdf,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------
// Billing

#[tracing::instrument(name = "dashboard.billing", skip_all)]
async fn billing(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    let viewer = admit(&caller, Page::Billing)?;
    let period = period_of(&state, &params).await?;
    let bills = match viewer.only_meter() {
        Some(own) => {
            let own = MeterId::try_new(own)
                .map_err(|_| PageError::Forbidden("the token's meter id is not valid".into()))?;
            state.store.meter_bills(&own, Some(period)).await?
        }
        None => state.store.bills(period).await?,
    };
    let tariff = &state.tariff;
    let mut body = format!(
        "<h2>Tariff in force: <span data-testid=\"tariff-name\">{}</span></h2>\
         <table id=\"tariff-slabs\" data-testid=\"tariff-slabs\"><thead><tr><th>Slab</th><th>From kWh</th>\
         <th>To kWh</th><th>Rate (paise/kWh)</th></tr></thead><tbody>",
        escape(tariff.name())
    );
    for (n, slab) in tariff.slabs().iter().enumerate() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\" data-testid=\"slab-rate-{n}\">{}</td></tr>",
            n + 1,
            kwh(slab.from.get()),
            slab.to.map_or_else(|| "∞".to_owned(), |to| kwh(to.get())),
            slab.rate_paise
        );
    }
    body.push_str("</tbody></table>");
    if tariff.band_count() > 1 {
        body.push_str(
            "<table id=\"tariff-bands\" data-testid=\"tariff-bands\"><thead><tr><th>Band</th>\
             <th>Hours</th><th>Rate (% of slab rate)</th></tr></thead><tbody>",
        );
        for band in tariff.bands() {
            let hours: Vec<String> = band
                .hours
                .iter()
                .map(|r| {
                    format!(
                        "{:02}:{:02}–{:02}:{:02}",
                        r.from_minute() / 60,
                        r.from_minute() % 60,
                        r.to_minute() / 60,
                        r.to_minute() % 60
                    )
                })
                .collect();
            let hours = if hours.is_empty() {
                "the rest of the day".to_owned()
            } else {
                hours.join(", ")
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                escape(&band.name),
                escape(&hours),
                band.rate_percent
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        "<h2>Slab breakdown, <span data-testid=\"period\">{period}</span></h2>\
         <form method=\"get\" action=\"/billing\"><label for=\"period\">Period</label>\
         <input id=\"period\" name=\"period\" value=\"{period}\" pattern=\"[0-9]{{4}}-[0-9]{{2}}\">\
         <button type=\"submit\">Show</button></form>\
         <table id=\"billing-table\" data-testid=\"billing-table\"><thead><tr><th>Meter</th>"
    );
    for label in state.labels.iter() {
        let _ = write!(body, "<th>{} (kWh)</th>", escape(label));
    }
    body.push_str("<th>Total kWh</th><th>Amount</th></tr></thead><tbody>");
    for bill in &bills {
        let m = escape(bill.meter_id.as_str());
        let _ = write!(body, "<tr data-testid=\"billing-row-{m}\"><td>{m}</td>");
        for cell in 0..state.labels.len() {
            let wh = bill.slabs.get(cell).map(|s| s.wh);
            let _ = write!(
                body,
                "<td class=\"num\" data-testid=\"billing-cell{cell}-{m}\">{}</td>",
                opt_kwh(wh)
            );
        }
        let _ = write!(
            body,
            "<td class=\"num\" data-testid=\"billing-kwh-{m}\">{}</td>\
             <td class=\"num\" data-testid=\"billing-amount-{m}\">{}</td></tr>",
            crate::store::format_kwh(bill.total_wh()),
            rupees(bill.amount_paise)
        );
    }
    body.push_str("</tbody></table>");
    if bills.is_empty() {
        body.push_str("<p class=\"muted\">No bill released for this period.</p>");
    }
    Ok(render(&caller, "/billing", "Billing", &body))
}

// ---------------------------------------------------------------------------------------
// Forecasting and grid health

/// The hours of `hours` grouped by group, in group order.
fn by_group(hours: &[GroupHour]) -> Vec<(u32, Vec<&GroupHour>)> {
    let mut groups: Vec<(u32, Vec<&GroupHour>)> = Vec::new();
    for h in hours {
        match groups.last_mut() {
            Some((g, list)) if *g == h.group => list.push(h),
            _ => groups.push((h.group, vec![h])),
        }
    }
    groups
}

fn opt_milli(milli: Option<i64>) -> String {
    milli.map_or_else(|| "—".to_owned(), kwh)
}

#[tracing::instrument(name = "dashboard.forecasting", skip_all)]
async fn forecasting(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    admit(&caller, Page::Forecasting)?;
    let day = day_of(&state, &params).await?;
    let hours = match &day {
        Some(day) => state.store.dashboard_group_hours(day).await?,
        None => Vec::new(),
    };
    let mut body = day_form("/forecasting", day.as_deref());
    if hours.is_empty() {
        body.push_str("<p class=\"muted\" data-testid=\"no-groups\">No group forecast or total released for this day.</p>");
    }
    for (group, list) in by_group(&hours) {
        let forecast = list
            .iter()
            .filter_map(|h| {
                h.forecast_milli_kwh
                    .map(|v| (hour_of(&h.hour), v as f64 / 1000.0))
            })
            .collect();
        let actual = list
            .iter()
            .filter_map(|h| h.actual_wh.map(|v| (hour_of(&h.hour), v as f64 / 1000.0)))
            .collect();
        let _ = write!(body, "<h2>Group {group}</h2>");
        body.push_str(&hour_chart(
            &format!("forecast-chart-{group}"),
            &format!("Group {group}: released forecast total against released actual total"),
            &forecast,
            &actual,
            None,
        ));
        let _ = write!(
            body,
            "<table data-testid=\"forecast-table-{group}\"><thead><tr><th>Hour</th>\
             <th>Forecast kWh</th><th>Homes</th><th>Actual kWh</th></tr></thead><tbody>"
        );
        for h in list {
            let hour = hour_of(&h.hour);
            let _ = write!(
                body,
                "<tr><td>{hour:02}:00</td><td class=\"num\" data-testid=\"forecast-{group}-{hour:02}\">{}</td>\
                 <td class=\"num\">{}</td>\
                 <td class=\"num\" data-testid=\"actual-{group}-{hour:02}\">{}</td></tr>",
                opt_milli(h.forecast_milli_kwh),
                h.forecast_homes
                    .map_or_else(|| "—".to_owned(), |n| n.to_string()),
                opt_milli(h.actual_wh),
            );
        }
        body.push_str("</tbody></table>");
    }
    Ok(render(&caller, "/forecasting", "Forecasting", &body))
}

fn day_form(action: &str, day: Option<&str>) -> String {
    let day = escape(day.unwrap_or(""));
    format!(
        "<form method=\"get\" action=\"{action}\"><label for=\"day\">Day</label>\
         <input id=\"day\" name=\"day\" value=\"{day}\" pattern=\"[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}\">\
         <button type=\"submit\">Show</button> <span data-testid=\"day\">{day}</span></form>"
    )
}

#[tracing::instrument(name = "dashboard.grid", skip_all)]
async fn grid(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    admit(&caller, Page::Grid)?;
    let day = day_of(&state, &params).await?;
    let hours = match &day {
        Some(day) => state.store.dashboard_group_hours(day).await?,
        None => Vec::new(),
    };
    let mut body = day_form("/grid", day.as_deref());
    body.push_str(
        "<p>An hour's energy in kWh is its average load in kW. A group is flagged when its \
         released forecast total (or its released actual total) for an hour crosses the \
         feeder's capacity.</p>",
    );
    let _ = write!(
        body,
        "<table id=\"grid-table\" data-testid=\"grid-table\"><thead><tr><th>Group</th>\
         <th>Capacity kW</th><th>Peak forecast kW</th><th>Peak actual kW</th>\
         <th>Hours over (forecast)</th><th>Hours over (actual)</th><th>Status</th></tr></thead><tbody>"
    );
    let groups = by_group(&hours);
    let mut charts = String::new();
    for (group, list) in &groups {
        let capacity = state.grid.capacity_kw(*group);
        let kw = |v: i64| v as f64 / 1000.0;
        let peak_f = list.iter().filter_map(|h| h.forecast_milli_kwh).max();
        let peak_a = list.iter().filter_map(|h| h.actual_wh).max();
        let over_f: Vec<u32> = list
            .iter()
            .filter(|h| h.forecast_milli_kwh.is_some_and(|v| kw(v) > capacity))
            .map(|h| hour_of(&h.hour))
            .collect();
        let over_a: Vec<u32> = list
            .iter()
            .filter(|h| h.actual_wh.is_some_and(|v| kw(v) > capacity))
            .map(|h| hour_of(&h.hour))
            .collect();
        let alert = !over_f.is_empty() || !over_a.is_empty();
        let hours_text = |hours: &[u32]| {
            if hours.is_empty() {
                "—".to_owned()
            } else {
                hours
                    .iter()
                    .map(|h| format!("{h:02}:00"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = write!(
            body,
            "<tr data-testid=\"grid-row-{group}\"{class}><td>{group}</td>\
             <td class=\"num\" data-testid=\"capacity-{group}\">{capacity:.3}</td>\
             <td class=\"num\" data-testid=\"peak-forecast-{group}\">{}</td>\
             <td class=\"num\" data-testid=\"peak-actual-{group}\">{}</td>\
             <td data-testid=\"over-forecast-{group}\">{}</td>\
             <td data-testid=\"over-actual-{group}\">{}</td>\
             <td data-testid=\"grid-status-{group}\">{}</td></tr>",
            opt_milli(peak_f),
            opt_milli(peak_a),
            hours_text(&over_f),
            hours_text(&over_a),
            if alert {
                "<span class=\"badge alert\">over capacity</span>"
            } else {
                "<span class=\"badge ok\">ok</span>"
            },
            class = if alert { " class=\"alert\"" } else { "" },
        );
        let forecast = list
            .iter()
            .filter_map(|h| h.forecast_milli_kwh.map(|v| (hour_of(&h.hour), kw(v))))
            .collect();
        let actual = list
            .iter()
            .filter_map(|h| h.actual_wh.map(|v| (hour_of(&h.hour), kw(v))))
            .collect();
        let _ = write!(charts, "<h2>Group {group}</h2>");
        charts.push_str(&hour_chart(
            &format!("grid-chart-{group}"),
            &format!("Group {group}: load against capacity"),
            &forecast,
            &actual,
            Some((capacity, format!("capacity {capacity} kW"))),
        ));
    }
    body.push_str("</tbody></table>");
    if groups.is_empty() {
        body.push_str("<p class=\"muted\">No group forecast or total released for this day.</p>");
    }
    body.push_str(&charts);
    Ok(render(&caller, "/grid", "Grid health", &body))
}

// ---------------------------------------------------------------------------------------
// Anomalies

/// The sentences of a stored explanation (a JSON list of items with `text`), else the raw
/// text.
fn explanation_text(explanation: Option<&str>) -> String {
    #[derive(Deserialize)]
    struct Item {
        text: String,
    }
    let Some(raw) = explanation else {
        return "—".to_owned();
    };
    match serde_json::from_str::<Vec<Item>>(raw) {
        Ok(items) if !items.is_empty() => items
            .into_iter()
            .map(|i| i.text)
            .collect::<Vec<_>>()
            .join("; "),
        _ => raw.to_owned(),
    }
}

fn flagged_table(body: &mut String, flagged: &[crate::store::FlaggedDay]) {
    if flagged.is_empty() {
        body.push_str("<p class=\"muted\" data-testid=\"no-anomalies\">No flagged day.</p>");
        return;
    }
    body.push_str(
        "<table id=\"anomalies-table\" data-testid=\"anomalies-table\"><thead><tr><th>Meter</th><th>Day</th>\
         <th>Score</th><th>Model</th><th>Explanation</th></tr></thead><tbody>",
    );
    for f in flagged {
        let key = format!("{}-{}", escape(&f.meter_id), escape(&f.day));
        let _ = write!(
            body,
            "<tr data-testid=\"anomaly-{key}\"><td>{}</td><td>{}</td>\
             <td class=\"num\" data-testid=\"anomaly-score-{key}\">{:.3}</td><td>{}</td>\
             <td data-testid=\"anomaly-explanation-{key}\">{}</td></tr>",
            escape(&f.meter_id),
            escape(&f.day),
            f.score,
            f.source,
            escape(&explanation_text(f.explanation.as_deref()))
        );
    }
    body.push_str("</tbody></table>");
}

#[tracing::instrument(name = "dashboard.anomalies", skip_all)]
async fn anomalies(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    let viewer = admit(&caller, Page::Anomalies)?;
    let period = match params.period.as_deref().filter(|p| !p.is_empty()) {
        Some(_) => Some(period_of(&state, &params).await?),
        None => None,
    };
    let only = viewer
        .only_meter()
        .map(MeterId::try_new)
        .transpose()
        .map_err(|_| PageError::Forbidden("the token's meter id is not valid".into()))?;
    let flagged = state
        .store
        .dashboard_flagged_days(only.as_ref(), period, MAX_FLAGGED)
        .await?;
    let mut body = format!(
        "<p><span data-testid=\"anomaly-count\">{}</span> flagged days{}, newest first (at most {MAX_FLAGGED}).</p>",
        flagged.len(),
        period.map_or_else(String::new, |p| format!(" in {p}"))
    );
    flagged_table(&mut body, &flagged);
    Ok(render(&caller, "/anomalies", "Anomalies", &body))
}

// ---------------------------------------------------------------------------------------
// Ingest status

#[tracing::instrument(name = "dashboard.ingest", skip_all)]
async fn ingest(
    Authenticated(caller): Authenticated,
    State(state): State<DashboardState>,
    Query(params): Query<Params>,
) -> PageResult {
    admit(&caller, Page::Ingest)?;
    let period = period_of(&state, &params).await?;
    let counts = state.store.dashboard_overview(period).await?;
    let now = Utc::now();
    let since = now - ChronoDuration::hours(24);
    let per_hour = state
        .store
        .dashboard_batches_per_hour(since.timestamp_micros())
        .await?;
    let refusals = state.refusals.snapshot();
    let refused_total: u64 = refusals.iter().map(|(_, n)| n).sum();
    let last_24h: u64 = per_hour.iter().map(|h| h.batches).sum();
    let mut body = String::from("<div class=\"stats\">");
    body.push_str(&stat(
        "meters-seen",
        "Meters seen",
        &counts.homes.to_string(),
    ));
    body.push_str(&stat(
        "batches-total",
        "Batches stored",
        &counts.batches.to_string(),
    ));
    body.push_str(&stat(
        "batches-24h",
        "Batches, last 24 h",
        &last_24h.to_string(),
    ));
    body.push_str(&stat(
        "refusals-total",
        "Ingest refusals (since start)",
        &refused_total.to_string(),
    ));
    body.push_str("</div>");
    let now_hour = now.timestamp().div_euclid(3600);
    body.push_str(
        &Chart {
            id: "batches-per-hour".into(),
            title: "Batches received per hour, last 24 h".into(),
            y_label: "batches".into(),
            series: vec![Series {
                name: "batches".into(),
                points: per_hour
                    .iter()
                    .map(|h| ((h.hour - now_hour) as f64, h.batches as f64))
                    .collect(),
                mark: Mark::Bars,
            }],
            x_ticks: (-24..=0)
                .step_by(6)
                .map(|h| (f64::from(h), format!("{h} h")))
                .collect(),
            limit: None,
        }
        .render(),
    );
    body.push_str(
        "<table id=\"ingest-hours\" data-testid=\"ingest-hours\"><thead><tr><th>Hour (UTC)</th>\
         <th>Batches</th><th>Meters</th></tr></thead><tbody>",
    );
    for h in &per_hour {
        let start = chrono::DateTime::from_timestamp(h.hour * 3600, 0)
            .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:00").to_string());
        let _ = write!(
            body,
            "<tr><td>{start}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            h.batches, h.meters
        );
    }
    body.push_str("</tbody></table><h2>Refused ingest calls</h2><p class=\"muted\">Counted in \
                   memory by this process since it started, by gRPC status (the database \
                   records none); calls the gate refuses before the service are not among them.</p>\
                   <table id=\"refusals\" data-testid=\"refusals\"><thead><tr><th>Status</th><th>Calls</th></tr></thead><tbody>");
    for (code, n) in &refusals {
        let _ = write!(
            body,
            "<tr><td>{code}</td><td class=\"num\" data-testid=\"refusals-{code}\">{n}</td></tr>"
        );
    }
    body.push_str("</tbody></table>");
    jobs_section(&state, &mut body).await?;
    Ok(render(&caller, "/ingest", "Ingest status", &body))
}

/// The job table on the ingest page: counts per state, then every job not done and the most
/// recently finished ones, with attempts, lease holder and last error (`utility-server jobs`
/// prints the same with each attempt).
async fn jobs_section(state: &DashboardState, body: &mut String) -> Result<(), StoreError> {
    /// Finished jobs listed below the unfinished ones.
    const RECENT_DONE: usize = 20;
    let counts = state.store.job_counts().await?;
    let mut jobs = state.store.jobs(None).await?;
    body.push_str("<h2>Jobs</h2><div class=\"stats\">");
    for (job_state, n) in &counts {
        let name = job_state.as_str();
        body.push_str(&stat(
            &format!("jobs-{name}"),
            &format!("Jobs {name}"),
            &n.to_string(),
        ));
    }
    body.push_str("</div>");
    // Unfinished first (oldest first), then the latest finished.
    jobs.sort_by_key(|j| {
        (
            j.state == crate::store::JobState::Done,
            if j.state == crate::store::JobState::Done {
                -j.finished_us.unwrap_or(0)
            } else {
                j.created_us
            },
        )
    });
    let unfinished = jobs
        .iter()
        .filter(|j| j.state != crate::store::JobState::Done)
        .count();
    jobs.truncate(unfinished + RECENT_DONE);
    body.push_str(
        "<table id=\"jobs\" data-testid=\"jobs\"><thead><tr><th>Job</th><th>State</th>\
         <th>Attempts</th><th>Lease</th><th>Last change (UTC)</th><th>Last error</th></tr>\
         </thead><tbody>",
    );
    for job in &jobs {
        let changed = chrono::DateTime::from_timestamp_micros(job.updated_us)
            .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}/{}</td><td>{}</td><td>{changed}</td>\
             <td>{}</td></tr>",
            escape(&job.key),
            job.state.as_str(),
            job.attempts,
            job.max_attempts,
            escape(job.lease_owner.as_deref().unwrap_or("—")),
            escape(job.last_error.as_deref().unwrap_or("—")),
        );
    }
    body.push_str("</tbody></table>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanations_show_their_sentences() {
        let raw = r#"[{"feature":"night_load","hours":[1,2],"usual_low":2.5,"usual_high":3.1,"text":"01:00–03:00 used 2.5–3.1× its usual energy"}]"#;
        assert_eq!(
            explanation_text(Some(raw)),
            "01:00–03:00 used 2.5–3.1× its usual energy"
        );
        assert_eq!(explanation_text(Some("odd")), "odd");
        assert_eq!(explanation_text(None), "—");
    }

    #[test]
    fn hours_are_read_from_their_text() {
        assert_eq!(hour_of("2026-01-02T07"), 7);
        assert_eq!(hour_of("2026-01-02T23:00"), 23);
    }
}

//! `seer.v1.HomeResults`: one home's released daily results — the next-day forecast hours and
//! the anomaly results with their explanations — for the household's own dashboard.
//!
//! Who may read what is the bills' policy ([`crate::auth::BillsPolicy`], read through
//! [`crate::bills::authorize`]): a household token its own meter only, utility and admin tokens
//! any meter, auditor tokens none (they are also refused at the gate, [`crate::gate`]). The
//! results are final values the key authority released (`daily_forecasts`,
//! `daily_anomalies`); nothing here decrypts.

use chrono::NaiveDate;
use seer_proto::v1::home_results_server::HomeResults;
use seer_proto::v1::{
    DailyAnomaliesResponse, DailyForecastsResponse, HomeAnomalyDay, HomeForecastHour,
    HomeResultsRequest,
};
use tonic::{Request, Response, Status};

use crate::bills::{BillsError, authorize};
use crate::store::Store;

/// The longest day range one call may ask for.
pub const MAX_DAYS: i64 = 62;

/// Serves `seer.v1.HomeResults` from the store.
#[derive(Debug, Clone)]
pub struct HomeResultsService {
    store: Store,
}

impl HomeResultsService {
    /// A service reading `store`.
    #[must_use]
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// The days `[from, to)` of a request, checked.
fn day_range(request: &HomeResultsRequest) -> Result<(NaiveDate, NaiveDate), Status> {
    let parse = |name: &str, text: &str| {
        seer_core::parse_day(text).map_err(|_| {
            Status::invalid_argument(format!(
                "{name} {:?} is not YYYY-MM-DD",
                text.chars().take(16).collect::<String>()
            ))
        })
    };
    let from = parse("from_day", &request.from_day)?;
    let to = parse("to_day", &request.to_day)?;
    let days = (to - from).num_days();
    if days <= 0 || days > MAX_DAYS {
        return Err(Status::invalid_argument(format!(
            "the range must hold 1 to {MAX_DAYS} days, not {days}"
        )));
    }
    Ok((from, to))
}

fn store_error(error: crate::store::StoreError) -> Status {
    Status::from(BillsError::Store(error))
}

#[tonic::async_trait]
impl HomeResults for HomeResultsService {
    #[tracing::instrument(name = "HomeResults.DailyForecasts", skip_all, fields(meter))]
    async fn daily_forecasts(
        &self,
        request: Request<HomeResultsRequest>,
    ) -> Result<Response<DailyForecastsResponse>, Status> {
        let meter = authorize(&request, &request.get_ref().meter_id)?;
        tracing::Span::current().record("meter", meter.as_str());
        let (from, to) = day_range(request.get_ref())?;
        // One primary-key range of this meter's rows, whatever the fleet's size.
        let hours: Vec<HomeForecastHour> = self
            .store
            .meter_daily_forecasts(meter.as_str(), &from.to_string(), &to.to_string())
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|f| HomeForecastHour {
                hour: f.hour,
                kwh_milli: f.kwh_milli,
                input_day: f.input_day,
                model_blake3: f.model_blake3,
                audit_sequence: f.audit_seq,
            })
            .collect();
        Ok(Response::new(DailyForecastsResponse { hours }))
    }

    #[tracing::instrument(name = "HomeResults.DailyAnomalies", skip_all, fields(meter))]
    async fn daily_anomalies(
        &self,
        request: Request<HomeResultsRequest>,
    ) -> Result<Response<DailyAnomaliesResponse>, Status> {
        let meter = authorize(&request, &request.get_ref().meter_id)?;
        tracing::Span::current().record("meter", meter.as_str());
        let (from, to) = day_range(request.get_ref())?;
        let out = self
            .store
            .meter_daily_anomalies(meter.as_str(), &from.to_string(), &to.to_string())
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|a| HomeAnomalyDay {
                day: a.day,
                score_milli: a.score_milli,
                flagged: a.flagged,
                explanation_json: a.explanation.unwrap_or_default(),
                model_blake3: a.model_blake3,
                audit_sequence: a.audit_seq,
            })
            .collect();
        Ok(Response::new(DailyAnomaliesResponse { days: out }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(from: &str, to: &str) -> HomeResultsRequest {
        HomeResultsRequest {
            meter_id: "m".into(),
            from_day: from.into(),
            to_day: to.into(),
        }
    }

    #[test]
    fn day_ranges_are_checked() {
        assert_eq!(
            day_range(&request("2010-01-30", "2010-02-02"))
                .map(|(from, to)| (to - from).num_days())
                .unwrap(),
            3
        );
        for (from, to) in [
            ("2010-01-02", "2010-01-02"),
            ("2010-01-03", "2010-01-02"),
            ("2010-01-01", "2010-03-15"),
            ("2010-1-1", "2010-01-02"),
            ("", "2010-01-02"),
        ] {
            let status = day_range(&request(from, to)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{from} {to}");
        }
    }
}

//! What the utility released about this home, fetched for the dashboard with the household's
//! own token: its bills (`seer.v1.Bills/ListBills`) and its daily forecasts and anomaly
//! results (`seer.v1.HomeResults`). The utility answers a household token for its own meter
//! only; nothing is sent but the meter id and a day range.

use chrono::NaiveDate;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::bills_client::BillsClient;
use seer_proto::v1::home_results_client::HomeResultsClient;
use seer_proto::v1::{
    HomeAnomalyDay, HomeForecastHour, HomeResultsRequest, ListBillsRequest, StoredBill,
};

use crate::error::Error;
use crate::grpc::{BearerToken, connect};

/// Where the utility is and the household token that reads it.
#[derive(Clone, Debug)]
pub struct UtilityAccess {
    /// The utility server's gRPC URL.
    pub url: String,
    /// The household's token (audience: the utility server).
    pub token: BearerToken,
}

/// One home's released results.
#[derive(Clone, Debug, Default)]
pub struct HomeReleases {
    /// Its bills, oldest period first.
    pub bills: Vec<StoredBill>,
    /// Its forecast hours in the range, oldest first.
    pub forecasts: Vec<HomeForecastHour>,
    /// Its anomaly results in the range, oldest first.
    pub anomalies: Vec<HomeAnomalyDay>,
}

/// Fetches `meter`'s bills and its daily results of `[from, to)`.
///
/// # Errors
/// The utility cannot be reached or refuses a call.
pub async fn fetch(
    access: &UtilityAccess,
    meter: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<HomeReleases, Error> {
    let channel = connect(&access.url).await?;
    let mut bills = BillsClient::new(channel.clone()).with_seer_limits();
    let mut results = HomeResultsClient::new(channel).with_seer_limits();
    let mut request = tonic::Request::new(ListBillsRequest {
        meter_id: meter.to_owned(),
        period: None,
    });
    access.token.apply(&mut request);
    let bills = bills
        .list_bills(request)
        .await
        .map_err(|s| Error::rpc("Bills.ListBills", &s))?
        .into_inner()
        .bills;
    let range = HomeResultsRequest {
        meter_id: meter.to_owned(),
        from_day: from.to_string(),
        to_day: to.to_string(),
    };
    let mut request = tonic::Request::new(range.clone());
    access.token.apply(&mut request);
    let forecasts = results
        .daily_forecasts(request)
        .await
        .map_err(|s| Error::rpc("HomeResults.DailyForecasts", &s))?
        .into_inner()
        .hours;
    let mut request = tonic::Request::new(range);
    access.token.apply(&mut request);
    let anomalies = results
        .daily_anomalies(request)
        .await
        .map_err(|s| Error::rpc("HomeResults.DailyAnomalies", &s))?
        .into_inner()
        .days;
    Ok(HomeReleases {
        bills,
        forecasts,
        anomalies,
    })
}

/// The sentences of a released explanation (`seer-daily`'s items, each with a `text`), or the
/// JSON itself when it has another shape.
pub fn explanation_text(json: &str) -> String {
    let texts = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|i| i.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                .collect(),
            serde_json::Value::Object(o) => ["text", "sentence"]
                .iter()
                .filter_map(|k| o.get(*k).and_then(|t| t.as_str()).map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) if !texts(&v).is_empty() => texts(&v).join(" "),
        _ => json.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanations_read_as_sentences() {
        assert_eq!(
            explanation_text(
                r#"[{"feature":"evening","text":"Evening use was high."},{"text":"Night too."}]"#
            ),
            "Evening use was high. Night too."
        );
        assert_eq!(explanation_text(r#"{"sentence":"odd day"}"#), "odd day");
        assert_eq!(explanation_text("not json"), "not json");
    }
}

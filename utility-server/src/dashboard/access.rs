//! Who may open which dashboard page (see the [module documentation](super#who-sees-what)).

use seer_auth::{Caller, Role};

/// A dashboard page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/`: counts and the groups' forecast against actual.
    Overview,
    /// `/homes`, `/homes.csv` and `/homes/{meter}`.
    Homes,
    /// `/billing`.
    Billing,
    /// `/forecasting`.
    Forecasting,
    /// `/anomalies`.
    Anomalies,
    /// `/grid`.
    Grid,
    /// `/ingest`.
    Ingest,
}

/// What a logged-in viewer is, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// `utility` or `admin`: everything.
    Staff,
    /// A household: its own meter only.
    Household(String),
    /// An auditor: pages that reveal no home.
    Auditor,
}

impl Viewer {
    /// The viewer a verified caller is (`None`: a household token without a meter, which the
    /// verifier never accepts).
    #[must_use]
    pub fn of(caller: &Caller) -> Option<Self> {
        Some(match caller.role() {
            Role::Utility | Role::Admin => Self::Staff,
            Role::Household => Self::Household(caller.meter_id()?.to_owned()),
            Role::Auditor => Self::Auditor,
        })
    }

    /// Whether the viewer may open `page` at all (a household's pages then show its own
    /// home only).
    #[must_use]
    pub fn may_open(&self, page: Page) -> bool {
        match self {
            Self::Staff => true,
            Self::Household(_) => {
                matches!(page, Page::Homes | Page::Billing | Page::Anomalies)
            }
            Self::Auditor => matches!(page, Page::Overview | Page::Ingest),
        }
    }

    /// Whether the viewer may see meter `meter_id`'s data.
    #[must_use]
    pub fn may_see_meter(&self, meter_id: &str) -> bool {
        match self {
            Self::Staff => true,
            Self::Household(own) => own == meter_id,
            Self::Auditor => false,
        }
    }

    /// The one meter a household is limited to (`None` for staff).
    #[must_use]
    pub fn only_meter(&self) -> Option<&str> {
        match self {
            Self::Household(own) => Some(own),
            Self::Staff | Self::Auditor => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_opens_its_pages_only() {
        let all = [
            Page::Overview,
            Page::Homes,
            Page::Billing,
            Page::Forecasting,
            Page::Anomalies,
            Page::Grid,
            Page::Ingest,
        ];
        assert!(all.iter().all(|&p| Viewer::Staff.may_open(p)));
        let household = Viewer::Household("m1".into());
        let opened: Vec<Page> = all
            .iter()
            .copied()
            .filter(|&p| household.may_open(p))
            .collect();
        assert_eq!(opened, [Page::Homes, Page::Billing, Page::Anomalies]);
        let opened: Vec<Page> = all
            .iter()
            .copied()
            .filter(|&p| Viewer::Auditor.may_open(p))
            .collect();
        assert_eq!(opened, [Page::Overview, Page::Ingest]);
    }

    #[test]
    fn a_household_sees_its_own_meter_only() {
        let household = Viewer::Household("m1".into());
        assert!(household.may_see_meter("m1"));
        assert!(!household.may_see_meter("m2"));
        assert!(!Viewer::Auditor.may_see_meter("m1"));
        assert!(Viewer::Staff.may_see_meter("m2"));
        assert_eq!(household.only_meter(), Some("m1"));
        assert_eq!(Viewer::Staff.only_meter(), None);
    }
}

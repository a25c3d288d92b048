//! Checks a batch's two lanes as CKKS ciphertexts of the configured parameter sets, and the
//! billing layout they are packed in.
//!
//! Parsing a lane runs SEAL's validation of the whole ciphertext (a few hundred kilobytes at
//! n = 8192), so [`LaneValidator::check`] is blocking: async callers run it with
//! `spawn_blocking` ([`LaneValidator::check_blocking`] does).

use std::sync::Arc;

use seer_ckks::{Ciphertext, CkksContext, CkksError, Level, ParameterSet};
use seer_core::circuits::billing::{BillingLayout, LEVELS_USED};
use seer_core::tariff::Tariff;

use crate::batch::{Batch, Lane};

/// Why a lane is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LaneError {
    /// The bytes are not a valid ciphertext of the lane's parameter set (corrupted, truncated,
    /// too large, another parameter set, ...).
    #[error("the {lane} lane is not a valid ciphertext: {source}")]
    Ciphertext {
        /// Which lane.
        lane: Lane,
        /// What the engine found.
        source: CkksError,
    },
    /// The billing lane has too few levels left for the billing circuit.
    #[error(
        "the billing lane is at level {level}, the billing circuit needs at least {needed} levels"
    )]
    BillingLevel {
        /// The ciphertext's level.
        level: u32,
        /// What the circuit consumes.
        needed: u32,
    },
}

/// The contexts of both lanes and the billing layout: what the utility checks batches
/// against. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LaneValidator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    billing: CkksContext,
    analytics: CkksContext,
    layout: BillingLayout,
}

impl LaneValidator {
    /// Builds the CKKS contexts of both lanes and the billing layout of `tariff`. Blocking
    /// (SEAL builds its context tables).
    ///
    /// # Errors
    /// When a parameter set is invalid or the tariff does not fit the billing parameter set.
    pub fn new(
        billing: ParameterSet,
        analytics: ParameterSet,
        tariff: &Tariff,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let billing = CkksContext::new(billing).context("building the billing lane's context")?;
        let analytics = if analytics == billing.parameter_set() {
            billing.clone()
        } else {
            CkksContext::new(analytics).context("building the analytics lane's context")?
        };
        let layout =
            BillingLayout::try_new(tariff, &billing).context("laying out the billing circuit")?;
        Ok(Self {
            inner: Arc::new(Inner {
                billing,
                analytics,
                layout,
            }),
        })
    }

    /// The billing lane's context.
    #[must_use]
    pub fn billing_context(&self) -> &CkksContext {
        &self.inner.billing
    }

    /// The analytics lane's context.
    #[must_use]
    pub fn analytics_context(&self) -> &CkksContext {
        &self.inner.analytics
    }

    /// The billing layout (tariff, packing-group capacity).
    #[must_use]
    pub fn layout(&self) -> &BillingLayout {
        &self.inner.layout
    }

    /// Homes per billing packing group.
    #[must_use]
    pub fn billing_capacity(&self) -> usize {
        self.inner.layout.capacity()
    }

    /// Parses both lanes of `batch` (blocking; see the [module documentation](self)).
    ///
    /// # Errors
    /// The first lane that is not a valid ciphertext of its parameter set, or a billing lane
    /// with fewer than [`LEVELS_USED`] levels.
    pub fn check(&self, batch: &Batch) -> Result<(), LaneError> {
        let billing = Ciphertext::from_bytes(&self.inner.billing, batch.billing_lane()).map_err(
            |source| LaneError::Ciphertext {
                lane: Lane::Billing,
                source,
            },
        )?;
        if billing.level() < Level(LEVELS_USED) {
            return Err(LaneError::BillingLevel {
                level: billing.level().0,
                needed: LEVELS_USED,
            });
        }
        Ciphertext::from_bytes(&self.inner.analytics, batch.analytics_lane()).map_err(
            |source| LaneError::Ciphertext {
                lane: Lane::Analytics,
                source,
            },
        )?;
        Ok(())
    }

    /// [`check`](Self::check) on tokio's blocking pool, in the caller's span; hands the batch
    /// back with the verdict.
    ///
    /// # Errors
    /// As [`check`](Self::check); a panic in the check is reported as
    /// [`tokio::task::JoinError`] through the outer result.
    pub async fn check_blocking(
        &self,
        batch: Batch,
    ) -> Result<(Batch, Result<(), LaneError>), tokio::task::JoinError> {
        let validator = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let verdict = validator.check(&batch);
            (batch, verdict)
        })
        .await
    }
}

//! Binding the bearer token to the connection's client certificate.
//!
//! On a server configured with mutual TLS every connection carries a client certificate of the
//! deployment CA naming one party ([`seer_tls::Party`]). A token is accepted only together with
//! the certificate of the party it speaks for: a household token bound to meter M only from a
//! connection whose certificate names meter M, a utility token only with a utility
//! certificate, an auditor token with an auditor's, an admin token with an operator's. So a
//! token copied off one meter (or handed to the utility) cannot be used from another
//! connection's identity. A connection without TLS (a server configured without it) carries
//! no certificate and is not checked here.

use tonic::Request;

use crate::{Identity, TokenRejection};

/// Checks that the client certificate of `request`'s connection names the party `identity`
/// (from the verified token) speaks for. Passes on a connection without TLS.
///
/// # Errors
/// [`TokenRejection::CertificateMismatch`] when the certificate names another party, or none.
pub fn check_peer_certificate<T>(
    request: &Request<T>,
    identity: &Identity,
) -> Result<(), TokenRejection> {
    let Some(party) = seer_tls::request_party(request) else {
        return Ok(());
    };
    let mismatch = |certificate: String| {
        tracing::warn!(%certificate, token = %describe(identity), "client certificate refused");
        TokenRejection::CertificateMismatch {
            certificate,
            token: describe(identity),
        }
    };
    let party = party.map_err(|e| mismatch(e.to_string()))?;
    if certificate_matches(&party, identity) {
        Ok(())
    } else {
        Err(mismatch(format!("names {party}")))
    }
}

/// For the calls a meter makes without a token, naming itself in the body (enrolment, token
/// renewal): the reason to refuse when the connection's client certificate names another
/// party than meter `meter_id`, or none. `None` (no refusal) when it names that meter, or on
/// a connection without TLS.
#[must_use]
pub fn peer_meter_refusal<T>(request: &Request<T>, meter_id: &str) -> Option<String> {
    let party = match seer_tls::request_party(request)? {
        Ok(party) => party,
        Err(error) => return Some(format!("the client certificate {error}")),
    };
    let names_meter = party.kind() == seer_tls::PartyKind::Meter && party.name() == meter_id;
    (!names_meter).then(|| {
        tracing::warn!(certificate = %party, meter = meter_id, "client certificate refused");
        format!("the client certificate names {party}, not meter {meter_id}")
    })
}

/// Whether a certificate naming `party` may carry a token for `identity`.
#[must_use]
pub fn certificate_matches(party: &seer_tls::Party, identity: &Identity) -> bool {
    use seer_tls::PartyKind;
    match identity {
        Identity::Household { meter_id } => {
            party.kind() == PartyKind::Meter && party.name() == meter_id
        }
        Identity::Utility => party.kind() == PartyKind::Utility,
        Identity::Auditor => party.kind() == PartyKind::Auditor,
        Identity::Admin => party.kind() == PartyKind::Operator,
    }
}

fn describe(identity: &Identity) -> String {
    match identity {
        Identity::Household { meter_id } => format!("household of meter {meter_id}"),
        Identity::Utility => "utility".to_owned(),
        Identity::Auditor => "auditor".to_owned(),
        Identity::Admin => "admin".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use seer_tls::{Party, PartyKind};

    use super::*;

    #[test]
    fn each_token_needs_its_own_partys_certificate() {
        let household = |m: &str| Identity::Household {
            meter_id: m.to_owned(),
        };
        let party = |k, n| Party::try_new(k, n).expect("valid");
        let m1 = Party::meter("M-1").expect("valid");
        assert!(certificate_matches(&m1, &household("M-1")));
        assert!(!certificate_matches(&m1, &household("M-2")));
        assert!(!certificate_matches(&m1, &Identity::Utility));
        let utility = party(PartyKind::Utility, "utility");
        assert!(certificate_matches(&utility, &Identity::Utility));
        assert!(!certificate_matches(&utility, &household("utility")));
        assert!(!certificate_matches(&utility, &Identity::Auditor));
        assert!(!certificate_matches(&utility, &Identity::Admin));
        let auditor = party(PartyKind::Auditor, "a");
        assert!(certificate_matches(&auditor, &Identity::Auditor));
        assert!(!certificate_matches(&auditor, &Identity::Utility));
        let operator = party(PartyKind::Operator, "ops");
        assert!(certificate_matches(&operator, &Identity::Admin));
        let server = party(PartyKind::Server, "key-authority");
        for identity in [
            household("key-authority"),
            Identity::Utility,
            Identity::Auditor,
            Identity::Admin,
        ] {
            assert!(!certificate_matches(&server, &identity));
        }
        // A plaintext request (no TLS) is not checked here.
        assert!(check_peer_certificate(&Request::new(()), &household("M-1")).is_ok());
    }
}

//! Which SEER party a certificate names.
//!
//! A party certificate carries exactly one URI subject alternative name of the form
//! `urn:seer:<kind>:<name>`: `meter` (the name is the meter id, the subject of the meter's
//! household token), `utility`, `auditor`, `operator` (administrators' tools) or `server`
//! (a server with no client role, e.g. the key authority). Servers read the party of the
//! peer's certificate of a request with [`request_party`] and bind it to the caller the bearer
//! token names: a household token must come with its own meter's certificate.

use std::fmt;

use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::TlsError;

/// The prefix of every party URI.
pub const URN_PREFIX: &str = "urn:seer:";

/// Longest party name (a meter id is at most 64 bytes).
pub const MAX_NAME_LEN: usize = 64;

/// The kind of a [`Party`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartyKind {
    /// A household's meter client.
    Meter,
    /// The utility (its server and its jobs).
    Utility,
    /// An auditor of the key authority's log.
    Auditor,
    /// An operator's administrative tools (admin tokens).
    Operator,
    /// A server that acts as no client (the key authority).
    Server,
}

impl PartyKind {
    /// Every kind.
    pub const ALL: [PartyKind; 5] = [
        PartyKind::Meter,
        PartyKind::Utility,
        PartyKind::Auditor,
        PartyKind::Operator,
        PartyKind::Server,
    ];

    /// The kind's word in the URI (`meter`, `utility`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PartyKind::Meter => "meter",
            PartyKind::Utility => "utility",
            PartyKind::Auditor => "auditor",
            PartyKind::Operator => "operator",
            PartyKind::Server => "server",
        }
    }
}

impl fmt::Display for PartyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A party of a deployment, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Party {
    kind: PartyKind,
    name: String,
}

impl Party {
    /// A party of `kind` named `name`: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_`,
    /// `.` or `:` (the characters of a meter id).
    ///
    /// # Errors
    /// [`TlsError::InvalidName`] otherwise.
    pub fn try_new(kind: PartyKind, name: &str) -> Result<Self, TlsError> {
        let invalid = |reason| TlsError::InvalidName {
            kind: kind.as_str(),
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("it is longer than 64 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(invalid(
                "only ASCII letters, digits, '-', '_', '.' and ':' are allowed",
            ));
        }
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }

    /// The meter `meter_id`.
    ///
    /// # Errors
    /// As [`Party::try_new`].
    pub fn meter(meter_id: &str) -> Result<Self, TlsError> {
        Self::try_new(PartyKind::Meter, meter_id)
    }

    /// The party's kind.
    #[must_use]
    pub fn kind(&self) -> PartyKind {
        self.kind
    }

    /// The party's name (for a meter, its meter id).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URI its certificate carries: `urn:seer:<kind>:<name>`.
    #[must_use]
    pub fn uri(&self) -> String {
        format!("{URN_PREFIX}{}:{}", self.kind, self.name)
    }

    /// Parses `urn:seer:<kind>:<name>`.
    ///
    /// # Errors
    /// [`TlsError::NoParty`] for another form; [`TlsError::InvalidName`] for a bad name.
    pub fn try_from_uri(uri: &str) -> Result<Self, TlsError> {
        let rest = uri
            .strip_prefix(URN_PREFIX)
            .ok_or(TlsError::NoParty("names no urn:seer: party"))?;
        let (kind, name) = rest
            .split_once(':')
            .ok_or(TlsError::NoParty("names a urn:seer: party without a name"))?;
        let kind = PartyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or(TlsError::NoParty("names an unknown kind of party"))?;
        Self::try_new(kind, name)
    }

    /// The party a DER certificate names: its one `urn:seer:` URI subject alternative name.
    /// The certificate's chain is not checked here (rustls did that in the handshake).
    ///
    /// # Errors
    /// [`TlsError::Invalid`] when the certificate does not parse; [`TlsError::NoParty`] when
    /// it names no party or more than one.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, TlsError> {
        let (_, certificate) = X509Certificate::from_der(der).map_err(|e| TlsError::Invalid {
            what: "peer certificate".into(),
            reason: e.to_string(),
        })?;
        let san = certificate
            .subject_alternative_name()
            .map_err(|e| TlsError::Invalid {
                what: "peer certificate".into(),
                reason: e.to_string(),
            })?
            .ok_or(TlsError::NoParty("has no subject alternative names"))?;
        let mut parties = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(URN_PREFIX) => Some(*uri),
                _ => None,
            });
        let uri = parties
            .next()
            .ok_or(TlsError::NoParty("names no urn:seer: party"))?;
        if parties.next().is_some() {
            return Err(TlsError::NoParty("names more than one urn:seer: party"));
        }
        Self::try_from_uri(uri)
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// The party named by the client certificate of `request`: `None` on a connection without
/// TLS (a server configured without TLS); otherwise the end-entity certificate's party.
///
/// A server configured with TLS requires a client certificate of the deployment CA in the
/// handshake, so on such a server every request has one.
#[must_use]
pub fn request_party<T>(request: &tonic::Request<T>) -> Option<Result<Party, TlsError>> {
    let certs = request.peer_certs()?;
    Some(match certs.first() {
        Some(leaf) => Party::from_certificate_der(leaf.as_ref()),
        None => Err(TlsError::NoParty("is missing")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_bad_names_are_refused() {
        let meter = Party::meter("uci-2007:a.b_c").expect("valid");
        assert_eq!(meter.uri(), "urn:seer:meter:uci-2007:a.b_c");
        assert_eq!(Party::try_from_uri(&meter.uri()).expect("parses"), meter);
        for kind in PartyKind::ALL {
            let party = Party::try_new(kind, "x").expect("valid");
            assert_eq!(Party::try_from_uri(&party.uri()).expect("parses"), party);
        }
        assert!(Party::meter("").is_err());
        assert!(Party::meter(&"a".repeat(65)).is_err());
        assert!(Party::meter("a/b").is_err());
        assert!(Party::meter("a b").is_err());
        assert!(Party::try_from_uri("urn:seer:janitor:x").is_err());
        assert!(Party::try_from_uri("urn:other:meter:x").is_err());
        assert!(Party::try_from_uri("urn:seer:meter").is_err());
    }
}

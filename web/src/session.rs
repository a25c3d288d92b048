//! Logging in with a token the key authority issued.
//!
//! `GET /login` shows a form; `POST /login` verifies the pasted token with the program's
//! [`Authenticator`] and, when it verifies, keeps it in the `seer_session` cookie —
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
//! `Secure` over TLS, `Path=/`, expiring with the token. Every later request verifies the
//! cookie's token again ([`Authenticated`]), so an expired or revoked token stops working at
//! once; `POST /logout` clears it. The token never appears in a URL or a page.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Form;
use axum::Router;
use axum::extract::{FromRef, FromRequestParts, Query, State};
use axum::http::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use seer_auth::{Caller, Role};
use serde::Deserialize;

use crate::page::escape;

/// The cookie that holds the session's token.
pub const COOKIE_NAME: &str = "seer_session";

/// Longest token accepted from the form or the cookie (an EdDSA JWT of SEER is a few hundred
/// bytes).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies a token for a program's web pages (the same verifier as its gRPC services: the
/// key authority's published key, the program's audience, revocations where it knows them).
pub trait Authenticator: Send + Sync + 'static {
    /// The caller `token` authenticates, or why not (shown to the person logging in).
    ///
    /// # Errors
    /// A human-readable reason: expired, bad signature, wrong audience, revoked.
    fn authenticate(&self, token: &str) -> Result<Caller, String>;
}

impl Authenticator for seer_auth::TokenVerifier {
    fn authenticate(&self, token: &str) -> Result<Caller, String> {
        self.verify(token)
            .map_err(|rejection| rejection.to_string())
    }
}

impl<A: Authenticator> Authenticator for Arc<A> {
    fn authenticate(&self, token: &str) -> Result<Caller, String> {
        (**self).authenticate(token)
    }
}

/// A program's login sessions: its authenticator, the roles that may log in at all, and
/// whether the cookie is marked `Secure`.
#[derive(Clone)]
pub struct Sessions {
    authenticator: Arc<dyn Authenticator>,
    allowed: Arc<[Role]>,
    secure: bool,
    title: Arc<str>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("allowed", &self.allowed)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions verified by `authenticator`, open to callers of the `allowed` roles; `secure`
    /// marks the cookie `Secure` (set it when the listener speaks TLS). `title` names the
    /// program on the login page.
    pub fn new(
        authenticator: impl Authenticator,
        allowed: &[Role],
        secure: bool,
        title: &str,
    ) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
            allowed: allowed.into(),
            secure,
            title: title.into(),
        }
    }

    /// The caller whose token `headers` carry in the session cookie.
    ///
    /// # Errors
    /// [`LoginRequired`] when there is no cookie, its token does not verify, or its role may
    /// not log in here.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, LoginRequired> {
        let html = wants_html(headers);
        let token = session_token(headers).ok_or(LoginRequired { reason: None, html })?;
        self.verify(token).map_err(|reason| LoginRequired {
            reason: Some(reason),
            html,
        })
    }

    fn verify(&self, token: &str) -> Result<Caller, String> {
        if token.len() > MAX_TOKEN_LEN {
            return Err("the token is too long".to_owned());
        }
        let caller = self.authenticator.authenticate(token)?;
        if !self.allowed.contains(&caller.role()) {
            return Err(format!(
                "a {} token cannot log in here (allowed: {})",
                caller.role().as_str(),
                self.allowed
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(caller)
    }

    fn cookie(&self, token: &str, caller: &Caller) -> String {
        let max_age = caller
            .expires_at()
            .duration_since(SystemTime::now())
            .map_or(0, |left| left.as_secs());
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE_NAME}={token}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
        )
    }

    fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE_NAME}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict{secure}")
    }
}

/// The token in the session cookie of `headers`, if any.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A request without a valid session: a browser is sent to the login page, anything else
/// gets `401`.
#[derive(Debug)]
pub struct LoginRequired {
    reason: Option<String>,
    html: bool,
}

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        if self.html && self.reason.is_none() {
            return (
                StatusCode::SEE_OTHER,
                [(LOCATION, HeaderValue::from_static("/login"))],
            )
                .into_response();
        }
        let reason = self
            .reason
            .unwrap_or_else(|| "log in first (no session)".to_owned());
        if self.html {
            return (
                StatusCode::UNAUTHORIZED,
                Html(login_page("SEER", Some(&reason), "/")),
            )
                .into_response();
        }
        (
            StatusCode::UNAUTHORIZED,
            format!("unauthorized: {reason}\n"),
        )
            .into_response()
    }
}

/// The logged-in caller of a request (an extractor). Its rejection is [`LoginRequired`].
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Sessions: FromRef<S>,
{
    type Rejection = LoginRequired;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Sessions::from_ref(state).caller(&parts.headers).map(Self)
    }
}

/// A logged-in caller asking for what their role may not see.
#[derive(Debug)]
pub struct Forbidden(pub String);

impl IntoResponse for Forbidden {
    fn into_response(self) -> Response {
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Forbidden</title>\
             <link rel=\"stylesheet\" href=\"/static/seer.css\"></head><body><main class=\"narrow\">\
             <h1>Forbidden</h1><p data-testid=\"forbidden\">{}</p><p><a href=\"/\">Back</a></p>\
             </main></body></html>",
            escape(&self.0)
        );
        (StatusCode::FORBIDDEN, Html(body)).into_response()
    }
}

/// `Ok` when `caller` has one of `roles`, else [`Forbidden`] naming the role.
///
/// # Errors
/// [`Forbidden`].
pub fn require_role(caller: &Caller, roles: &[Role]) -> Result<(), Forbidden> {
    if roles.contains(&caller.role()) {
        Ok(())
    } else {
        Err(Forbidden(format!(
            "this page is not open to the {} role",
            caller.role().as_str()
        )))
    }
}

/// `Ok` when `caller` may see meter `meter_id`: a household only its own, other allowed
/// roles any.
///
/// # Errors
/// [`Forbidden`] for another home's page (without saying whether that home exists).
pub fn require_meter(caller: &Caller, meter_id: &str) -> Result<(), Forbidden> {
    match caller.role() {
        Role::Household if caller.meter_id() != Some(meter_id) => {
            Err(Forbidden("a household sees its own home only".to_owned()))
        }
        _ => Ok(()),
    }
}

/// The login and logout routes.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Sessions: FromRef<S>,
{
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

#[derive(Debug, Deserialize)]
struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").finish_non_exhaustive()
    }
}

/// Only a path on this site: `/x`, never `//host` or `https://host`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && next.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            next
        }
        _ => "/",
    }
}

async fn login_form(State(sessions): State<Sessions>, Query(next): Query<Next>) -> Html<String> {
    Html(login_page(
        &sessions.title,
        None,
        safe_next(next.next.as_deref()),
    ))
}

#[tracing::instrument(name = "web.login", skip_all)]
async fn login(State(sessions): State<Sessions>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    match sessions.verify(token) {
        Ok(caller) => {
            tracing::info!(
                subject = caller.subject(),
                role = caller.role().as_str(),
                "web: logged in"
            );
            let cookie = sessions.cookie(token, &caller);
            let target = safe_next(form.next.as_deref()).to_owned();
            let mut response = (StatusCode::SEE_OTHER, [(LOCATION, target)]).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(SET_COOKIE, value);
            }
            response
        }
        Err(reason) => {
            tracing::info!(%reason, "web: login refused");
            (
                StatusCode::UNAUTHORIZED,
                Html(login_page(
                    &sessions.title,
                    Some(&reason),
                    safe_next(form.next.as_deref()),
                )),
            )
                .into_response()
        }
    }
}

async fn logout(State(sessions): State<Sessions>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&sessions.clear_cookie()) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

fn login_page(title: &str, error: Option<&str>, next: &str) -> String {
    let error = error.map_or_else(String::new, |error| {
        format!(
            "<p class=\"alert\" data-testid=\"login-error\">Not logged in: {}</p>",
            escape(error)
        )
    });
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Log in · {title}</title><link rel=\"stylesheet\" href=\"/static/seer.css\"></head>\
         <body><main class=\"narrow\"><h1>{title}</h1>{error}\
         <form method=\"post\" action=\"/login\" id=\"login-form\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"token\">Access token (issued by the key authority)</label>\
         <textarea id=\"token\" name=\"token\" rows=\"6\" required autocomplete=\"off\" spellcheck=\"false\"></textarea>\
         <button type=\"submit\" id=\"login-submit\">Log in</button></form>\
         <p class=\"muted\">The token is kept in a cookie this site alone can read, never in \
         the page or its address.</p></main></body></html>",
        title = escape(title),
        next = escape(next),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/homes?page=2")), "/homes?page=2");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; seer_session=tok; b=2"),
        );
        assert_eq!(session_token(&headers), Some("tok"));
        headers.insert(COOKIE, HeaderValue::from_static("seer_session="));
        assert_eq!(session_token(&headers), None);
    }
}

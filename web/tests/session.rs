//! Login, the session cookie, roles and the security headers, against a router built the way
//! the programs build theirs, and the TLS listener end to end.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use http_body_util::BodyExt as _;
use seer_auth::{
    AUDIENCE_UTILITY_SERVER, Identity, JwtSigningKey, Role, TokenIssuer, TokenRequest,
};
use seer_web::session::{Authenticated, require_meter};
use seer_web::{Events, Sessions};
use tower::ServiceExt as _;

#[derive(Clone)]
struct State {
    sessions: Sessions,
    events: Events,
}

impl FromRef<State> for Sessions {
    fn from_ref(state: &State) -> Self {
        state.sessions.clone()
    }
}

impl FromRef<State> for Events {
    fn from_ref(state: &State) -> Self {
        state.events.clone()
    }
}

fn issuer() -> TokenIssuer {
    TokenIssuer::new(
        Arc::new(JwtSigningKey::generate().expect("key")),
        "seer-test",
    )
}

fn token(issuer: &TokenIssuer, role: Role, meter: Option<&str>, lifetime: Duration) -> String {
    let mut request = TokenRequest::new(
        Identity::try_new(role, meter.map(str::to_owned)).expect("identity"),
        lifetime,
    );
    request.audience = vec![AUDIENCE_UTILITY_SERVER.to_owned()];
    issuer.issue(&request).expect("token").token
}

fn app(issuer: &TokenIssuer) -> Router {
    let state = State {
        sessions: Sessions::new(
            issuer.verifier(AUDIENCE_UTILITY_SERVER),
            &[Role::Utility, Role::Admin, Role::Household],
            true,
            "Test",
        ),
        events: Events::new(),
    };
    Router::new()
        .route(
            "/homes/{meter}",
            get(
                |Authenticated(caller): Authenticated,
                 axum::extract::Path(meter): axum::extract::Path<String>| async move {
                    require_meter(&caller, &meter).map(|()| format!("home {meter}"))
                },
            ),
        )
        .merge(seer_web::common_routes())
        .layer(axum::middleware::from_fn(seer_web::headers::secure))
        .with_state(state)
}

async fn login(app: &Router, token: &str) -> (StatusCode, Option<String>) {
    let body = format!("token={token}&next=%2Fhomes%2Fm-1");
    let response = app
        .clone()
        .oneshot(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("response");
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    (response.status(), cookie)
}

async fn get_with(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path).header(header::ACCEPT, "text/html");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let csp = response
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .expect("every response carries the CSP")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).expect("utf-8"))
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("pair").to_owned()
}

#[tokio::test]
async fn a_verified_token_becomes_a_strict_http_only_cookie() {
    let issuer = issuer();
    let app = app(&issuer);
    let token = token(&issuer, Role::Utility, None, Duration::from_secs(600));
    let (status, cookie) = login(&app, &token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|value| value.parse().ok())
        .expect("Max-Age");
    assert!(
        (590..=600).contains(&max_age),
        "expires with the token: {max_age}"
    );
    let (status, body) = get_with(&app, "/homes/m-9", Some(&cookie_pair(&cookie))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "home m-9"));
}

#[tokio::test]
async fn no_session_bad_or_expired_tokens_and_other_homes_are_refused() {
    let issuer = issuer();
    let app = app(&issuer);
    // No cookie: a browser is sent to the login page.
    let (status, _) = get_with(&app, "/homes/m-1", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // A token of another key.
    let foreign = token(
        &self::issuer(),
        Role::Utility,
        None,
        Duration::from_secs(600),
    );
    let (status, cookie) = login(&app, &foreign).await;
    assert_eq!((status, cookie), (StatusCode::UNAUTHORIZED, None));
    let (status, body) =
        get_with(&app, "/homes/m-1", Some(&format!("seer_session={foreign}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("home m-1"));
    // An expired token (issued two minutes ago for one minute).
    let mut request = TokenRequest::new(
        Identity::try_new(Role::Utility, None).expect("id"),
        Duration::from_secs(60),
    );
    request.audience = vec![AUDIENCE_UTILITY_SERVER.to_owned()];
    let expired = issuer
        .issue_at(
            &request,
            std::time::SystemTime::now() - Duration::from_secs(120),
        )
        .expect("token")
        .token;
    let (status, _) = login(&app, &expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An auditor may not log in here at all.
    let auditor = token(&issuer, Role::Auditor, None, Duration::from_secs(600));
    let (status, body) =
        get_with(&app, "/homes/m-1", Some(&format!("seer_session={auditor}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("auditor"), "{body}");
    // A household sees its own home, never another.
    let household = token(
        &issuer,
        Role::Household,
        Some("m-1"),
        Duration::from_secs(600),
    );
    let (status, cookie) = login(&app, &household).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let pair = cookie_pair(&cookie.expect("cookie"));
    assert_eq!(
        get_with(&app, "/homes/m-1", Some(&pair)).await.0,
        StatusCode::OK
    );
    let (status, body) = get_with(&app, "/homes/m-2", Some(&pair)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.contains("home m-2"));
}

#[tokio::test]
async fn the_tls_listener_serves_the_router_and_refuses_plaintext_off_loopback() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = seer_tls::LocalPki::open_or_create(dir.path(), "web-test").expect("pki");
    let files = pki.server("localhost").expect("server certificate");
    let listener = seer_web::WebListener::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Some(&seer_web::WebTls::from(&files)),
    )
    .await
    .expect("bind");
    assert!(listener.url().starts_with("https://127.0.0.1:"));
    let refused = seer_web::WebListener::bind("0.0.0.0:0".parse().expect("addr"), None).await;
    assert!(matches!(
        refused,
        Err(seer_web::WebError::PlaintextNotLoopback { .. })
    ));
    let address = listener.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener.serve(
        Router::new().route("/", get(|| async { "hello" })),
        async move {
            let _ = stopped.await;
        },
    ));
    // A plaintext request to the TLS port gets no HTTP answer.
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await;
    assert!(!String::from_utf8_lossy(&answer).contains("hello"));
    let _ = stop.send(());
    server.await.expect("join").expect("serve");
}

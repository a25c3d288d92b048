//! SEER's web pages, shared by every program that serves one (the utility's dashboard, the
//! household's dashboard in `meter-client`, the auditor's `seer audit serve`).
//!
//! - [`listener`]: an HTTP/1.1 + HTTP/2 listener for an axum [`Router`](axum::Router), over TLS
//!   with the deployment's server certificate (no client certificate: browsers hold none), or
//!   plaintext on loopback only;
//! - [`session`]: log in with a token the key authority issued, kept in an `HttpOnly`,
//!   `SameSite=Strict` cookie (and `Secure` over TLS), verified on every request by the
//!   program's own [`Authenticator`](session::Authenticator), and the [`Authenticated`](session::Authenticated)
//!   extractor;
//! - [`page`]: the page layout with its navigation, HTML escaping, number formatting, and the
//!   static stylesheet and script (no CDN, no external font);
//! - [`chart`]: server-rendered SVG line and bar charts;
//! - [`events`]: "something changed" notifications as server-sent events; the pages' script
//!   re-renders the page's `<main>` when one arrives;
//! - [`headers`]: security headers (a strict Content-Security-Policy: scripts and styles only
//!   from the program itself, so pages carry no inline `<script>` and no `style=` attribute).

pub mod chart;
pub mod events;
pub mod headers;
pub mod listener;
pub mod page;
pub mod session;

mod error;

pub use error::WebError;
pub use events::Events;
pub use listener::{WebListener, WebTls};
pub use page::{Layout, NavItem, escape};
pub use session::{Authenticated, Authenticator, Sessions};

/// The routes every SEER web page needs besides its own: the static stylesheet and script,
/// the login and logout forms and the live-update event stream, with the security headers on
/// every response. Merge the program's own routes into the result (or this into them) and
/// apply [`headers::secure`] to the whole router.
pub fn common_routes<S>() -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
    Sessions: axum::extract::FromRef<S>,
    Events: axum::extract::FromRef<S>,
{
    axum::Router::new()
        .merge(page::static_routes())
        .merge(session::routes())
        .merge(events::routes())
}

//! The page layout, HTML escaping, number formatting and the static stylesheet and script.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use seer_auth::Caller;

const STYLESHEET: &str = include_str!("../static/seer.css");
const SCRIPT: &str = include_str!("../static/seer.js");

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, safe in element content and in quoted
/// attribute values.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An amount in paise as rupees with two decimals and Indian digit grouping: `₹1,23,456.78`.
#[must_use]
pub fn rupees(paise: i64) -> String {
    let sign = if paise < 0 { "-" } else { "" };
    let paise = paise.unsigned_abs();
    let rupees = (paise / 100).to_string();
    let cents = paise % 100;
    // Indian grouping: the last three digits, then groups of two.
    let grouped = if rupees.len() <= 3 {
        rupees
    } else {
        let (head, tail) = rupees.split_at(rupees.len() - 3);
        let mut groups = Vec::new();
        let mut head = head;
        while head.len() > 2 {
            let (rest, group) = head.split_at(head.len() - 2);
            groups.push(group);
            head = rest;
        }
        groups.push(head);
        groups.reverse();
        format!("{},{tail}", groups.join(","))
    };
    format!("{sign}₹{grouped}.{cents:02}")
}

/// Energy in Wh as kWh with three decimals (`12.345`).
#[must_use]
pub fn kwh(wh: i64) -> String {
    let sign = if wh < 0 { "-" } else { "" };
    let wh = wh.unsigned_abs();
    format!("{sign}{}.{:03}", wh / 1000, wh % 1000)
}

/// One entry of the navigation bar.
#[derive(Debug, Clone, Copy)]
pub struct NavItem {
    /// The page's path.
    pub href: &'static str,
    /// Its label.
    pub label: &'static str,
}

/// The frame of every page: the program's name, its navigation (already filtered to what the
/// viewer's role may open), the active entry and the viewer.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// The program's name in the header ("SEER utility").
    pub app: &'a str,
    /// The navigation entries.
    pub nav: &'a [NavItem],
    /// The `href` of the current page's entry.
    pub active: &'a str,
    /// The logged-in viewer, if the page has one.
    pub viewer: Option<&'a Caller>,
}

impl Layout<'_> {
    /// The page `title` around `body` (HTML the caller escaped). `<main>` carries
    /// `data-live="/events"`: the script re-renders it when a live update arrives.
    pub fn render(&self, title: &str, body: &str) -> Html<String> {
        let mut nav = String::new();
        for item in self.nav {
            let current = if item.href == self.active {
                " aria-current=\"page\""
            } else {
                ""
            };
            nav.push_str(&format!(
                "<a href=\"{}\"{current}>{}</a>",
                escape(item.href),
                escape(item.label)
            ));
        }
        let viewer = self.viewer.map_or_else(String::new, |viewer| {
            let who = match viewer.meter_id() {
                Some(meter) => format!("{} · {}", viewer.role().as_str(), meter),
                None => format!("{} · {}", viewer.role().as_str(), viewer.subject()),
            };
            format!(
                "<span class=\"viewer\" data-testid=\"viewer\">{}</span>\
                 <form method=\"post\" action=\"/logout\" class=\"inline\">\
                 <button type=\"submit\" id=\"logout\">Log out</button></form>",
                escape(&who)
            )
        });
        let live = if self.viewer.is_some() {
            " data-live=\"/events\""
        } else {
            ""
        };
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} · {app}</title>\
             <link rel=\"stylesheet\" href=\"/static/seer.css\">\
             <script src=\"/static/seer.js\" defer></script></head>\
             <body><header><span class=\"brand\">{app}</span><nav>{nav}</nav>{viewer}</header>\
             <main id=\"main\"{live}><h1>{title}</h1>{body}</main>\
             <footer>SEER — readings stay encrypted; only registered results are released.\
             <span id=\"live-status\" data-testid=\"live-status\"></span></footer></body></html>",
            title = escape(title),
            app = escape(self.app),
        ))
    }
}

/// `GET /static/seer.css` and `GET /static/seer.js`.
pub fn static_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/static/seer.css",
            get(|| async {
                (
                    [
                        (CONTENT_TYPE, "text/css; charset=utf-8"),
                        (CACHE_CONTROL, "public, max-age=300"),
                    ],
                    STYLESHEET,
                )
                    .into_response()
            }),
        )
        .route(
            "/static/seer.js",
            get(|| async {
                (
                    [
                        (CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (CACHE_CONTROL, "public, max-age=300"),
                    ],
                    SCRIPT,
                )
                    .into_response()
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn rupees_use_indian_grouping() {
        assert_eq!(rupees(0), "₹0.00");
        assert_eq!(rupees(5), "₹0.05");
        assert_eq!(rupees(123_456), "₹1,234.56");
        assert_eq!(rupees(12_345_678_901), "₹12,34,56,789.01");
        assert_eq!(rupees(-250), "-₹2.50");
    }

    #[test]
    fn kwh_has_three_decimals() {
        assert_eq!(kwh(0), "0.000");
        assert_eq!(kwh(12_345), "12.345");
        assert_eq!(kwh(-5), "-0.005");
    }
}

//! Live updates: a program calls [`Events::notify`] when something a page shows has changed
//! (a batch stored, a bill released); every open page receives a server-sent event on
//! `/events` and its script re-renders the page's `<main>`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

use crate::Sessions;
use crate::session::Authenticated;

/// How many notifications a slow page may fall behind before it just re-renders once.
const BACKLOG: usize = 64;

/// The "something changed" notifier; clone it freely.
#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<String>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A notifier with no subscriber yet.
    #[must_use]
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        Self { sender }
    }

    /// Tells every open page that `what` changed (a short tag such as `batch` or `bill`; it is
    /// the event's name, never data a viewer may not see).
    pub fn notify(&self, what: &str) {
        // No open page: nothing to tell.
        let _ = self.sender.send(what.to_owned());
    }

    /// How many pages are listening.
    #[must_use]
    pub fn listeners(&self) -> usize {
        self.sender.receiver_count()
    }

    /// The notifications from now on, as server-sent events (a lagging page gets one
    /// `changed` event for everything it missed).
    pub fn stream(&self) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<> {
        BroadcastStream::new(self.sender.subscribe()).map(|item| {
            let what = item.unwrap_or_else(|_| "changed".to_owned());
            Ok(Event::default().event("changed").data(what))
        })
    }
}

/// `GET /events`: the live-update stream, for logged-in viewers only.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Sessions: FromRef<S>,
    Events: FromRef<S>,
{
    Router::new().route("/events", get(stream))
}

async fn stream(
    _viewer: Authenticated,
    State(events): State<Events>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(events.stream()).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

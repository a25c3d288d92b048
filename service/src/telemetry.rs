//! Logging: `tracing` events on stderr, as text or JSON lines (`log.format`), so that stdout
//! carries only the machine-readable `listening on ADDRESS` line.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global `tracing` subscriber writing text to stderr, filtered by `filter`
/// (an `EnvFilter` directive such as `info`); colours only when stderr is a terminal.
///
/// # Errors
/// When `filter` is invalid or a global subscriber is already installed.
pub fn init(filter: &str) -> anyhow::Result<()> {
    init_with(&LogSettings {
        filter: filter.to_owned(),
        format: LogFormat::Text,
    })
}

/// Installs the global `tracing` subscriber of `settings` (`[log]`: filter and format),
/// writing to stderr.
///
/// # Errors
/// When the filter is invalid or a global subscriber is already installed.
pub fn init_with(settings: &LogSettings) -> anyhow::Result<()> {
    let ansi = std::io::stderr().is_terminal();
    // `try_init` also forwards the `log` crate's records (sqlx, rustls) into `tracing`.
    subscriber(settings, std::io::stderr, ansi)?
        .try_init()
        .map_err(|error| anyhow::anyhow!(error))
        .context("installing the tracing subscriber")
}

/// The subscriber of `settings` writing to `writer` (colours with `ansi`, text only).
///
/// # Errors
/// When the filter is invalid.
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
    ansi: bool,
) -> anyhow::Result<Box<dyn tracing::Subscriber + Send + Sync>>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.filter)
        .with_context(|| format!("invalid log filter {:?}", settings.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    Ok(match settings.format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `MakeWriter` collecting everything written.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    fn logged(format: LogFormat) -> String {
        let captured = Captured::default();
        let settings = LogSettings {
            filter: "info".to_owned(),
            format,
        };
        let subscriber = subscriber(&settings, captured.clone(), false).expect("subscriber");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("grpc", path = "/seer.v1.Node/GetInfo");
            let _entered = span.enter();
            tracing::info!(meter_id = "m-1", batches = 3, "stored \"quoted\" batch");
            tracing::debug!("filtered out");
        });
        let bytes = captured.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn json_lines_parse_with_their_fields_and_span() {
        let text = logged(LogFormat::Json);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON log line");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "stored \"quoted\" batch");
        assert_eq!(line["fields"]["meter_id"], "m-1");
        assert_eq!(line["fields"]["batches"], 3);
        assert_eq!(line["span"]["name"], "grpc");
        assert_eq!(line["span"]["path"], "/seer.v1.Node/GetInfo");
        assert!(line["timestamp"].is_string());
    }

    #[test]
    fn text_lines_are_not_json() {
        let text = logged(LogFormat::Text);
        assert!(text.contains("stored \"quoted\" batch"), "{text}");
        assert!(text.contains("meter_id=\"m-1\""), "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(text.trim()).is_err());
    }
}

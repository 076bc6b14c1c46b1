//! Logs: human text for a person at a terminal, one JSON object per line for everything
//! else (journald, a container's log collector, a file), as `[log] format` says. The
//! filter is `[log] level`, or `NOROSHI_LOG` when set.
//!
//! In JSON every field is at the top level, the fields of the spans an event happened in
//! included: a delivery attempt runs in the `attempt` span, so each line it logs carries
//! the `request_id` the API answered with when the announcement was accepted, and one
//! `jq 'select(.request_id == "…")'` follows a request to every delivery. Secrets never
//! reach a field: they are `SecretString`s, whose `Debug` prints `[REDACTED]`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the process's logger (once; later calls do nothing).
pub fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_env("NOROSHI_LOG").unwrap_or_else(|_| EnvFilter::new(&config.level));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let json = match config.format.as_str() {
        "json" => true,
        "human" => false,
        _ => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init()
    } else {
        // Colours only for a person at a terminal.
        builder
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
            .try_init()
    };
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC), `level`, `message`, the
/// fields of every enclosing span (outermost first, inner ones winning), then the event's
/// own fields.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), event.metadata().level().as_str().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // Span fields are kept as JSON text by `JsonFields`.
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(fields)) = serde_json::from_str(fields) {
                        line.extend(fields);
                    }
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields into the line's object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here too, printed with their Display.
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

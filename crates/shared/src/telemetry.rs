//! The tracing subscriber used by every binary, and the optional OTLP trace export.
//!
//! Level filtering follows `RUST_LOG` (default `info`). `TICKETNEST_LOG_FORMAT=json`
//! switches to one JSON object per line for log shippers. Log lines carry structured
//! fields only; request bodies, passwords and tokens are never recorded.
//!
//! **OTLP.** With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! set, spans are also exported over OTLP/HTTP (`tracing-opentelemetry`; protobuf unless
//! `OTEL_EXPORTER_OTLP_PROTOCOL` says `http/json`), batched on a thread of their own;
//! the standard `OTEL_*` variables (headers, timeout, `OTEL_BSP_*`, `OTEL_SERVICE_NAME`)
//! apply. The API's request span links to a W3C `traceparent` header if the client
//! sent one; the booking's `traceparent` travels in the stream message
//! ([`current_traceparent`]), and the worker's batch span links to it ([`link_to`]). Unset,
//! no exporter or layer exists and [`exporting`] is false, so nothing is added to a
//! request or a message.

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer,
};

/// Whether spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The W3C header and message field naming a span's trace and parent.
const TRACEPARENT: &str = "traceparent";

/// Links a span keeps (the SDK's default is 128): the largest worker batch
/// (`TICKETNEST_BATCH_SIZE` is at most 10,000).
const MAX_LINKS: u32 = 10_000;

/// Keeps the exporter running; dropping it flushes the spans not yet sent (bounded by
/// the exporter's timeout). Hold it for the life of `main`.
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // On a thread of its own: the exporter's blocking HTTP client must not be
            // driven (or dropped) from inside the async runtime `main` runs on.
            let flushed = std::thread::spawn(move || provider.shutdown()).join();
            if let Ok(Err(e)) = flushed {
                eprintln!("could not flush the last spans: {e}");
            }
        }
    }
}

/// Installs the global subscriber writing to stdout, and the OTLP export when it is
/// configured. Safe to call more than once (later calls are ignored), so tests and
/// binaries share it.
pub fn init(service: &'static str, default_filter: &str) -> Telemetry {
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_owned());
    let mut filter =
        EnvFilter::try_new(&requested).unwrap_or_else(|_| EnvFilter::new(default_filter));
    // tokio-postgres logs every statement's parameters at debug level: password hashes,
    // emails. Keep it at info unless someone asks for it by name.
    if !requested.contains("tokio_postgres") {
        if let Ok(directive) = "tokio_postgres=info".parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Built on a thread of its own, for the same reason as the flush in `drop`.
    let provider = std::thread::spawn(move || otlp_provider(service))
        .join()
        .ok()
        .flatten();
    // Spans are exported whatever the log level: `RUST_LOG` filters the log lines
    // only, the export takes TicketNest's own spans at info.
    let otel = provider.as_ref().map(|p| {
        let ours = Targets::new()
            .with_target("pub_api", Level::INFO)
            .with_target("sub_worker", Level::INFO)
            .with_target("shared", Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(ours)
    });
    let json = std::env::var("TICKETNEST_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only for a terminal: log files and collectors get plain text.
    let ansi = std::io::stdout().is_terminal();
    let registry = tracing_subscriber::registry();
    // Without export, `RUST_LOG` filters globally, as cheap as filtering gets; with
    // it, it filters the log lines only.
    let result = match (otel, json) {
        (None, true) => registry
            .with(filter)
            .with(fmt::layer().json().with_current_span(true))
            .try_init(),
        (None, false) => registry
            .with(filter)
            .with(fmt::layer().with_target(false).with_ansi(ansi))
            .try_init(),
        (Some(otel), true) => registry
            .with(otel)
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_filter(filter),
            )
            .try_init(),
        (Some(otel), false) => registry
            .with(otel)
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(ansi)
                    .with_filter(filter),
            )
            .try_init(),
    };
    // Err only means a subscriber is already installed: then this one exports nothing.
    let installed = result.is_ok();
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(service, "exporting spans over OTLP");
    }
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}

/// The exporter and provider, when an OTLP endpoint is configured.
fn otlp_provider(service: &'static str) -> Option<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;

    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    // The protocol the variables name, protobuf by default. Checked here: the crate
    // would quietly send JSON for a protocol it was not built with (`grpc`).
    let named = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    let protocol = match named.as_deref().map(str::trim) {
        None | Some("http/protobuf") => opentelemetry_otlp::Protocol::HttpBinary,
        Some("http/json") => opentelemetry_otlp::Protocol::HttpJson,
        Some(other) => {
            eprintln!(
                "OTLP export not started: protocol `{other}` is not supported (use \
                 http/protobuf or http/json)"
            );
            return None;
        }
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("OTLP export not started: {e}");
            return None;
        }
    };
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource);
    // A worker's batch links to every request it decides: as many links as the
    // largest batch, unless the standard variable says otherwise.
    if !set("OTEL_SPAN_LINK_COUNT_LIMIT") {
        builder = builder.with_max_links_per_span(MAX_LINKS);
    }
    Some(builder.build())
}

/// Whether spans are being exported: only then is anything carried between processes.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The current span's W3C `traceparent`, to carry in a message; `None` unless
/// exporting (and then nothing is looked up).
pub fn current_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The span a `traceparent` names (from a message or a header); `None` when it is not
/// a valid one, or when not exporting.
pub fn remote_span(traceparent: &str) -> Option<SpanContext> {
    if !exporting() {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let remote = cx.span().span_context().clone();
    remote.is_valid().then_some(remote)
}

/// Links `span` to the spans the `traceparents` name (the requests a worker's batch
/// decides); invalid ones are skipped. Nothing when not exporting.
pub fn link_to<'a>(span: &tracing::Span, traceparents: impl Iterator<Item = &'a str>) {
    for remote in traceparents.filter_map(remote_span) {
        span.add_link(remote);
    }
}

/// Links `span` to the remote span a client's `traceparent` header names; nothing when
/// it names none or when not exporting. A link, not a parent: a client must not decide
/// whether TicketNest's spans are sampled, nor put them into another trace.
pub fn link_remote(span: &tracing::Span, traceparent: Option<&str>) {
    link_to(span, traceparent.into_iter());
}

/// For tests: logs to stdout only when `TEST_LOG` is set, otherwise nowhere.
pub fn init_for_tests() {
    if std::env::var("TEST_LOG").is_ok() {
        std::mem::forget(init("test", "debug"));
    }
}

#[cfg(test)]
mod tests {
    /// A protocol this build cannot speak (`grpc`) starts no export, instead of posting
    /// JSON to a gRPC port. (Each test runs in a process of its own under nextest.)
    #[test]
    fn an_unsupported_protocol_starts_no_export() {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
        std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        assert!(super::otlp_provider("test").is_none());
        std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
        let provider = super::otlp_provider("test").expect("http/json is supported");
        let _ = provider.shutdown();
    }
}

//! slog JSON logging with consistent keys: `time` (RFC3339), `level`, `message`, `component`,
//! and per-event fields (`namespace`, `pod`, `uuid`, `request_id`, `duration_ms`). Never log a
//! secret: callers pass names and ids, never token or password values.

use super::sentry::Sentry;
use crate::config::LogLevel;
use slog::{o, Drain, Level, Logger};

/// Keeps the async drain alive; logs are flushed when it is dropped.
pub struct LogGuard {
    _guard: Option<slog_async::AsyncGuard>,
}

fn to_slog(level: LogLevel) -> Level {
    match level {
        LogLevel::Trace => Level::Trace,
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warn => Level::Warning,
        LogLevel::Error => Level::Error,
    }
}

/// The JSON line format of every record: `time`, `level`, `message`, then the record's and the
/// logger's key-values. Keys must be distinct in a line (a strict JSON parser refuses duplicates,
/// jq and Loki silently keep one): callers never use `time`, `level` or `message` as keys, and a
/// record does not repeat a key of its logger's context (`mode`, `component`, ...). The tests
/// check every line they produce this way (`testing::log_lines`).
pub fn json_drain<W: std::io::Write>(w: W) -> slog_json::Json<W> {
    slog_json::Json::new(w)
        .set_newlines(true)
        .set_flush(true)
        .add_key_value(o!(
            "time" => slog::PushFnValue(|_: &slog::Record, ser| {
                ser.emit(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }),
            "level" => slog::FnValue(|r: &slog::Record| r.level().as_str()),
            "message" => slog::PushFnValue(|r: &slog::Record, ser| ser.emit(r.msg())),
        ))
        .build()
}

/// The root logger for the process: JSON lines on stdout through a bounded async channel that
/// blocks rather than drops under bursts. With `sentry`, Error and Critical records are also
/// reported to Sentry, from the caller's thread and without waiting (see [`super::sentry`]).
pub fn build_logger(level: LogLevel, sentry: Option<&Sentry>) -> (Logger, LogGuard) {
    let json = json_drain(std::io::stdout()).fuse();
    let json = json.filter_level(to_slog(level)).fuse();
    let (drain, guard) = slog_async::Async::new(json)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .build_with_guard();
    let logger = match sentry {
        None => Logger::root(drain.fuse(), root_values()),
        Some(s) => Logger::root(slog::Duplicate::new(drain, s.drain()).fuse(), root_values()),
    };
    // Library records (`log` and `tracing`) join vdbi's log (see `library_logs`).
    super::library_logs::install(&logger.new(o!("component" => "library")));
    (
        logger,
        LogGuard {
            _guard: Some(guard),
        },
    )
}

fn root_values() -> slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV> {
    o!("app" => "vdbi")
}

/// A logger that discards everything (tests).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

//! Library records in vdbi's log: a `log` logger (ttrpc, rustls, kube's `log` users) and a
//! `tracing` subscriber (kube-rs, hyper/h2, vaultrs, rustify) that forward into vdbi's slog
//! logger, with the library's target under the `target` key.
//!
//! What is forwarded:
//! * error → error, warn → warning; info → debug (a library's routine chatter is not vdbi's
//!   news; `logLevel: debug` shows it);
//! * never debug or trace: at those levels libraries dump requests and headers (an
//!   `X-Vault-Token`, a database password in a Vault response);
//! * nothing from vaultrs and rustify: their `#[instrument(err)]` events repeat, unclassified,
//!   the failures vdbi already logs with the classified [`crate::vault::VaultError`], and their
//!   traces carry request URLs and sizes. vdbi logs every Vault failure itself.
//!
//! Spans are not recorded (events only).

use slog::{debug, error, warn, Logger};
use std::fmt::Write as _;

/// The level a library record is logged at in vdbi's log, if it is forwarded at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    Error,
    Warning,
    Debug,
}

/// Targets whose records are never forwarded (see the module documentation).
const DROPPED_TARGETS: &[&str] = &["vaultrs", "rustify"];

/// The forwarding rule: `level` is 1 (error) … 5 (trace), as `log::Level`.
pub fn forward(target: &str, level: log::Level) -> Option<Forward> {
    let crate_name = target.split("::").next().unwrap_or(target);
    if DROPPED_TARGETS.contains(&crate_name) {
        return None;
    }
    match level {
        log::Level::Error => Some(Forward::Error),
        log::Level::Warn => Some(Forward::Warning),
        log::Level::Info => Some(Forward::Debug),
        log::Level::Debug | log::Level::Trace => None,
    }
}

fn emit(log: &Logger, f: Forward, target: &str, message: &str) {
    match f {
        Forward::Error => error!(log, "{}", message; "target" => target),
        Forward::Warning => warn!(log, "{}", message; "target" => target),
        Forward::Debug => debug!(log, "{}", message; "target" => target),
    }
}

/// Installs both bridges into `log` for the whole process (the first call wins).
pub fn install(log: &Logger) {
    if log::set_boxed_logger(Box::new(LogBridge(log.clone()))).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let _ = tracing::subscriber::set_global_default(TracingBridge(log.clone()));
}

struct LogBridge(Logger);

impl log::Log for LogBridge {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        forward(m.target(), m.level()).is_some()
    }

    fn log(&self, r: &log::Record<'_>) {
        if let Some(f) = forward(r.target(), r.level()) {
            emit(&self.0, f, r.target(), &r.args().to_string());
        }
    }

    fn flush(&self) {}
}

struct TracingBridge(Logger);

fn log_level(l: &tracing::Level) -> log::Level {
    match *l {
        tracing::Level::ERROR => log::Level::Error,
        tracing::Level::WARN => log::Level::Warn,
        tracing::Level::INFO => log::Level::Info,
        tracing::Level::DEBUG => log::Level::Debug,
        tracing::Level::TRACE => log::Level::Trace,
    }
}

/// An event's `message` followed by its other fields as ` key=value`.
#[derive(Default)]
struct Fields(String, String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
}

impl tracing::Subscriber for TracingBridge {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        // spans are not recorded: only events are wanted
        m.is_event() && forward(m.target(), log_level(m.level())).is_some()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let m = event.metadata();
        let Some(f) = forward(m.target(), log_level(m.level())) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.0.push_str(&fields.1);
        emit(&self.0, f, m.target(), &fields.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_rules() {
        assert_eq!(
            forward("ttrpc::asynchronous", log::Level::Warn),
            Some(Forward::Warning)
        );
        assert_eq!(
            forward("kube_runtime::watcher", log::Level::Error),
            Some(Forward::Error)
        );
        assert_eq!(
            forward("rustls::client", log::Level::Info),
            Some(Forward::Debug)
        );
        assert_eq!(forward("h2::codec", log::Level::Debug), None);
        assert_eq!(forward("hyper", log::Level::Trace), None);
        assert_eq!(forward("vaultrs::api", log::Level::Error), None);
        assert_eq!(forward("rustify::endpoint", log::Level::Warn), None);
        assert_eq!(forward("vaultrs", log::Level::Warn), None);
        // a crate whose name merely starts with a dropped one is not dropped
        assert_eq!(
            forward("vaultrsx", log::Level::Warn),
            Some(Forward::Warning)
        );
    }
}

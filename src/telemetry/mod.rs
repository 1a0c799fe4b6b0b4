//! Logs (slog, JSON), metrics (Prometheus, `vdbi_*`) and optional Sentry error reporting.

pub mod cardinality;
pub mod external_clock;
pub mod library_logs;
pub mod logging;
pub mod metrics;
pub mod sentry;
pub mod summary;

pub use external_clock::ExternalClock;
pub use logging::{build_logger, LogGuard};
pub use metrics::Metrics;
pub use sentry::{Sentry, SentrySettings};

//! Logs (slog, JSON) and metrics (Prometheus, `vdbi_*`).

pub mod external_clock;
pub mod logging;
pub mod metrics;
pub mod summary;

pub use external_clock::ExternalClock;
pub use logging::{build_logger, LogGuard};
pub use metrics::Metrics;

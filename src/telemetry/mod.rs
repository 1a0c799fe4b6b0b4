//! Logs (slog, JSON) and metrics (Prometheus, `vdbi_*`).

pub mod logging;
pub mod metrics;
pub mod summary;

pub use logging::{build_logger, LogGuard};
pub use metrics::Metrics;

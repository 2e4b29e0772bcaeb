//! What the service tells its operators: metrics, the audit trail and logs.

pub mod asked;
pub mod audit;
pub mod audit_file;
pub mod logfmt;
pub mod logging;
pub mod logwriter;
pub mod metrics;

//! Member metrics: each member's Prometheus `/metrics` page, parsed.

pub mod prom;

//! Member metrics: each member's Prometheus `/metrics` page, parsed.

pub mod prom;

/// An HTTP error for people: the root cause, not reqwest's debug dump.
pub fn describe_http_error(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

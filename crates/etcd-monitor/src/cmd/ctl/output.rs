//! Output helpers: the `-w` formats, etcdctl-style tables, sizes and the
//! JSON shapes etcdctl prints (keys and values base64-encoded).

use etcd_client::{KeyValue, ResponseHeader};
use serde_json::{Value, json};

/// `-w`: how results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// etcdctl's default line format.
    Simple,
    /// A boxed table.
    Table,
    /// JSON shaped like etcdctl's `-w json` (byte strings base64-encoded).
    Json,
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes as text for the simple format (lossy for non-UTF-8, like a terminal).
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A size the way etcdctl prints it (SI units: `20 kB`, `1.2 MB`).
pub fn human_bytes(n: i64) -> String {
    let mut value = n as f64;
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", units[unit])
    } else {
        format!("{value:.0} {}", units[unit])
    }
}

/// The response header as etcdctl's JSON has it (zero fields left out, as
/// Go's `omitempty` does).
pub fn header_json(h: Option<&ResponseHeader>) -> Value {
    let mut v = json!({});
    if let Some(h) = h {
        let fields = [
            ("cluster_id", json!(h.cluster_id()), h.cluster_id() != 0),
            ("member_id", json!(h.member_id()), h.member_id() != 0),
            ("revision", json!(h.revision()), h.revision() != 0),
            ("raft_term", json!(h.raft_term()), h.raft_term() != 0),
        ];
        for (name, value, present) in fields {
            if present {
                v[name] = value;
            }
        }
    }
    v
}

/// One key-value as etcdctl's JSON has it.
pub fn kv_json(kv: &KeyValue) -> Value {
    let mut v = json!({
        "key": base64(kv.key()),
        "create_revision": kv.create_revision(),
        "mod_revision": kv.mod_revision(),
        "version": kv.version(),
    });
    if !kv.value().is_empty() {
        v["value"] = json!(base64(kv.value()));
    }
    if kv.lease() != 0 {
        v["lease"] = json!(kv.lease());
    }
    v
}

/// Prints a JSON value on one line.
pub fn print_json(v: &Value) {
    println!("{v}");
}

/// Renders an etcdctl-style table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("| {c:<w$} "))
            .collect::<String>()
            + "|\n"
    };
    let mut out = rule.clone();
    out += &line(
        headers
            .iter()
            .zip(&widths)
            .map(|(h, w)| format!("{h:^w$}"))
            .collect(),
    );
    out += &rule;
    for row in rows {
        out += &line(row.clone());
    }
    out += &rule;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"1"), "MQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"hello world"), "aGVsbG8gd29ybGQ=");
    }

    #[test]
    fn sizes_like_etcdctl() {
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_200_000), "1.2 MB");
    }
}

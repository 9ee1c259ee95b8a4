//! etcdctl's transaction text format:
//!
//! ```text
//! value("key") = "expected"      <- compares, one per line
//! mod("other") > "0"
//!                                <- blank line
//! put key "new value"            <- operations if every compare holds
//! get key
//!                                <- blank line
//! del key                        <- operations otherwise
//! ```
//!
//! Compares: `value|mod|create|ver|version|lease("key") =|!=|<|> "arg"`.
//! Operations: `put KEY VALUE [--lease=HEX] [--prev-kv]`,
//! `get KEY [RANGE_END] [--prefix] [--from-key] [--limit=N] [--rev=N] [--keys-only] [--count-only]`,
//! `del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv]`.
//! Words are split like a shell: "double" and 'single' quotes, `\` escapes.

use super::keys::KeyRange;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

/// A parsed transaction: the etcd request plus the text of each part, for
/// error messages and echoing.
#[derive(Debug, Clone)]
pub struct ParsedTxn {
    /// The request.
    pub txn: Txn,
    /// Number of compares, success and failure operations.
    pub counts: (usize, usize, usize),
}

/// Parses the text format; errors name the line and what is wrong.
///
/// ```
/// let t = etcd_monitor::ops::txn::parse("value(\"a\") = \"1\"\n\nput a 2\n\ndel a\n").unwrap();
/// assert_eq!(t.counts, (1, 1, 1));
/// ```
pub fn parse(text: &str) -> Result<ParsedTxn, String> {
    let mut sections: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if sections.len() < 3 {
                sections.push(Vec::new());
            }
            continue;
        }
        if let Some(s) = sections.last_mut() {
            s.push((i + 1, line));
        }
    }
    sections.resize_with(3, Vec::new);
    let compares = sections[0]
        .iter()
        .map(|(n, l)| parse_compare(l).map_err(|e| format!("txn line {n}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ops = |section: &[(usize, &str)]| {
        section
            .iter()
            .map(|(n, l)| parse_op(l).map_err(|e| format!("txn line {n}: {e}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let success = ops(&sections[1])?;
    let failure = ops(&sections[2])?;
    let counts = (compares.len(), success.len(), failure.len());
    Ok(ParsedTxn {
        txn: Txn::new().when(compares).and_then(success).or_else(failure),
        counts,
    })
}

fn parse_compare(line: &str) -> Result<Compare, String> {
    let line = line.trim();
    let open = line
        .find('(')
        .ok_or_else(|| format!("compare {line:?} is not target(\"key\") op \"value\""))?;
    let target = line[..open].trim();
    let close = find_closing(line, open)
        .ok_or_else(|| format!("compare {line:?} has no closing parenthesis"))?;
    let key_words = split_words(&line[open + 1..close])?;
    let [key] = key_words.as_slice() else {
        return Err(format!("compare {line:?} needs exactly one key"));
    };
    let rest = line[close + 1..].trim();
    let (op, arg) = ["!=", "=", "<", ">"]
        .iter()
        .find_map(|sym| rest.strip_prefix(sym).map(|a| (*sym, a)))
        .ok_or_else(|| format!("compare {line:?}: operator must be =, !=, < or >"))?;
    let op = match op {
        "=" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        _ => CompareOp::Greater,
    };
    let arg_words = split_words(arg)?;
    let [arg] = arg_words.as_slice() else {
        return Err(format!("compare {line:?} needs one quoted value"));
    };
    let number = |what: &str| {
        arg.parse::<i64>()
            .map_err(|_| format!("compare {line:?}: {what} must be a number, not {arg:?}"))
    };
    Ok(match target {
        "value" | "val" => Compare::value(key.as_str(), op, arg.as_str()),
        "mod" | "m" => Compare::mod_revision(key.as_str(), op, number("mod revision")?),
        "create" | "c" => Compare::create_revision(key.as_str(), op, number("create revision")?),
        "ver" | "version" | "v" => Compare::version(key.as_str(), op, number("version")?),
        "lease" => Compare::lease(
            key.as_str(),
            op,
            i64::from_str_radix(arg, 16)
                .map_err(|_| format!("compare {line:?}: lease must be a hex id"))?,
        ),
        other => {
            return Err(format!(
                "compare {line:?}: unknown target {other:?} (value, mod, create, ver, lease)"
            ));
        }
    })
}

fn find_closing(line: &str, open: usize) -> Option<usize> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices().skip_while(|(i, _)| *i <= open) {
        match (quote, c) {
            (_, _) if escaped => escaped = false,
            (Some('"'), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, ')') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits a line into words like a shell: quotes group, `\` escapes in
/// double quotes and outside quotes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => cur.push('\n'),
                            Some('t') => cur.push('\t'),
                            Some(x) => cur.push(x),
                            None => return Err(format!("unfinished escape in {line:?}")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed double quote in {line:?}")),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed single quote in {line:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn parse_op(line: &str) -> Result<TxnOp, String> {
    let words = split_words(line)?;
    let (flags, args): (Vec<&String>, Vec<&String>) =
        words.iter().skip(1).partition(|w| w.starts_with("--"));
    let flag = |name: &str| flags.iter().any(|f| f.as_str() == name);
    let value = |name: &str| {
        flags
            .iter()
            .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    let known = |allowed: &[&str]| {
        for f in &flags {
            let name = f.split('=').next().unwrap_or_default();
            if !allowed.contains(&name) {
                return Err(format!("operation {line:?}: unknown flag {name}"));
            }
        }
        Ok(())
    };
    let number = |name: &str| -> Result<Option<i64>, String> {
        value(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("operation {line:?}: {name} needs a number"))
            })
            .transpose()
    };
    let range = |key: &str, rest: &[&String]| {
        KeyRange {
            key: key.to_string(),
            range_end: rest.first().map(|e| e.to_string()),
            prefix: flag("--prefix"),
            from_key: flag("--from-key"),
        }
        .to_etcd()
        .map_err(|e| format!("operation {line:?}: {e}"))
    };
    match (words.first().map(String::as_str), args.as_slice()) {
        (Some("put"), [key, val]) => {
            known(&["--lease", "--prev-kv"])?;
            let mut opts = PutOptions::new();
            if let Some(l) = value("--lease") {
                let id = i64::from_str_radix(l, 16)
                    .map_err(|_| format!("operation {line:?}: --lease needs a hex id"))?;
                opts = opts.with_lease(id);
            }
            if flag("--prev-kv") {
                opts = opts.with_prev_key();
            }
            Ok(TxnOp::put(key.as_str(), val.as_str(), Some(opts)))
        }
        (Some("get"), [key, rest @ ..]) if rest.len() <= 1 => {
            known(&[
                "--prefix",
                "--from-key",
                "--limit",
                "--rev",
                "--keys-only",
                "--count-only",
            ])?;
            let (key, end) = range(key, rest)?;
            let mut opts = GetOptions::new();
            if !end.is_empty() {
                opts = opts.with_range(end);
            }
            if let Some(n) = number("--limit")? {
                opts = opts.with_limit(n);
            }
            if let Some(n) = number("--rev")? {
                opts = opts.with_revision(n);
            }
            if flag("--keys-only") {
                opts = opts.with_keys_only();
            }
            if flag("--count-only") {
                opts = opts.with_count_only();
            }
            Ok(TxnOp::get(key, Some(opts)))
        }
        (Some("del" | "delete"), [key, rest @ ..]) if rest.len() <= 1 => {
            known(&["--prefix", "--from-key", "--prev-kv"])?;
            let (key, end) = range(key, rest)?;
            let mut opts = DeleteOptions::new();
            if !end.is_empty() {
                opts = opts.with_range(end);
            }
            if flag("--prev-kv") {
                opts = opts.with_prev_key();
            }
            Ok(TxnOp::delete(key, Some(opts)))
        }
        _ => Err(format!(
            "operation {line:?} is not `put KEY VALUE`, `get KEY [END]` or `del KEY [END]`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_like_a_shell() {
        assert_eq!(
            split_words(r#"put k "hello world" 'a b' c\ d"#).unwrap(),
            vec!["put", "k", "hello world", "a b", "c d"]
        );
        assert!(split_words("put k \"open").is_err());
    }

    #[test]
    fn sections_and_counts() {
        let t =
            parse("mod(\"a\") > \"0\"\nver(\"b\") = \"1\"\n\nput a 1\nget a --prefix\n").unwrap();
        assert_eq!(t.counts, (2, 2, 0));
        let t = parse("\nput a 1\n\n").unwrap();
        assert_eq!(t.counts, (0, 1, 0));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("value(\"a\") ~ \"1\"\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = parse("value(\"a\") = \"1\"\n\nput a\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let e = parse("mod(\"a\") > \"x\"\n").unwrap_err();
        assert!(e.contains("number"), "{e}");
        let e = parse("\nget a --bogus\n").unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
    }
}

//! Secrets kept in files (`*_file` keys): the first line of the file, so
//! a trailing newline from `echo` or an editor is not part of the secret.

use std::path::Path;

/// Reads the secret in `path`: its first line, without the line ending.
/// The error names the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(format!(
            "{} is empty: its first line must hold the secret",
            path.display()
        ));
    }
    Ok(first.to_string())
}

/// Whether `path` can be read by users other than its owner and group
/// (worth a warning for a file holding a secret).
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Whether `path` can be read by users other than its owner and group.
#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_secret_and_errors_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc #x\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), "abc #x");
        std::fs::write(&p, "123456\r\nignored").unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), "123456");
        std::fs::write(&p, "\nsecret-on-line-two").unwrap();
        let e = read_secret_file(&p).unwrap_err();
        assert!(
            e.contains("is empty") && !e.contains("secret-on-line-two"),
            "{e}"
        );
        let e = read_secret_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}

/// Deserializes an optional secret string. Unlike plain `Option<String>`,
/// a wrongly typed value (`password: 123456` unquoted in YAML) is refused
/// with a message that does not repeat the value.
pub mod opt_string {
    use serde::Serializer;
    use serde::de::{self, Deserializer, Visitor};

    struct SecretVisitor;

    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a quoted string")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(SecretVisitor)
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(not_text())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(not_text())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(not_text())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(not_text())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(not_text())
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(not_text())
        }
    }

    fn not_text<E: de::Error>() -> E {
        E::custom(
            "a secret must be text: quote it in YAML (\"...\"), because an unquoted 0123 or yes is read as a number or a boolean",
        )
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(SecretVisitor)
    }

    /// Serializes as a plain optional string.
    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v),
            None => s.serialize_none(),
        }
    }
}

/// The URL with the password of its user info replaced by
/// [`super::REDACTED`] (`postgres://user:<redacted>@host/db`).
pub fn redact_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!(
                    "{}{user}:{}{}",
                    &url[..scheme_end + 3],
                    super::REDACTED,
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A URL that is itself a credential (Slack and webhook URLs carry their
/// token in the path or query): scheme and host kept, the rest redacted.
pub fn redact_url_path(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return super::REDACTED.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{}{host}/{}", &url[..scheme_end + 3], super::REDACTED)
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url_password("postgres://mon:s3cr#t@db:5432/x"),
            "postgres://mon:<redacted>@db:5432/x"
        );
        assert_eq!(redact_url_password("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact_url_path("https://hooks.slack.com/services/T0/B0/XYZ?x=1"),
            "https://hooks.slack.com/<redacted>"
        );
        assert_eq!(
            redact_url_path("http://u:p@127.0.0.1:9/hook"),
            "http://127.0.0.1:9/<redacted>"
        );
    }
}

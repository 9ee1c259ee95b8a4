//! Durations in configuration files, written as `5s`, `250ms`, `1m30s`.

use std::time::Duration;

use serde::{Deserializer, Serializer};

/// Parses a human duration such as `5s`, `250ms` or `1m30s`.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "invalid duration {text:?} ({e}): write a number with a unit, like 500ms, 5s or 1m30s"
        )
    })
}

/// Formats a duration the way [`parse`] reads it.
pub fn format(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration with a unit, like 500ms, 5s or 1m30s")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v} (no unit): write a number with a unit, like {v}s or {v}ms"
            )))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            self.visit_u64(v.unsigned_abs())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v} (no unit): write it like {v}s"
            )))
        }
    }
    d.deserialize_any(Visitor)
}

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d))
}

/// `Option<Duration>` fields: absent or a duration.
pub mod option {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_bare_words() {
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        let err = parse("fivesec").unwrap_err();
        assert!(
            err.contains("\"fivesec\"") && err.contains("like 500ms"),
            "{err}"
        );
        assert_eq!(format(&Duration::from_secs(90)), "1m 30s");
        assert_eq!(
            parse(&format(&Duration::from_millis(1500))).unwrap(),
            Duration::from_millis(1500)
        );
    }
}

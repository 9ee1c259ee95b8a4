//! Which keys a `get`, `del` or `watch` covers: etcdctl's
//! `KEY [RANGE_END] [--prefix] [--from-key]`, turned into etcd's
//! `[key, range_end)` once for every verb and for `txn` operations.

/// A key or a range of keys, as etcdctl's arguments give it.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct KeyRange {
    /// The key, or the start of the range.
    #[arg(id = "KEY", value_name = "KEY")]
    pub key: String,
    /// End of the range (exclusive).
    pub range_end: Option<String>,
    /// Every key that starts with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Every key >= KEY (byte order).
    #[arg(long)]
    pub from_key: bool,
}

impl KeyRange {
    /// etcd's `(key, range_end)`; `range_end` is empty for a single key.
    /// Errors when more than one way of giving the end is used.
    ///
    /// ```
    /// use etcd_monitor::ops::keys::KeyRange;
    /// let r = KeyRange { key: "a/".into(), prefix: true, ..KeyRange::default() };
    /// assert_eq!(r.to_etcd().unwrap(), (b"a/".to_vec(), b"a0".to_vec()));
    /// ```
    pub fn to_etcd(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let ways = [self.range_end.is_some(), self.prefix, self.from_key]
            .iter()
            .filter(|w| **w)
            .count();
        if ways > 1 {
            return Err(format!(
                "key {:?}: give at most one of RANGE_END, --prefix and --from-key",
                self.key
            ));
        }
        let mut key = self.key.as_bytes().to_vec();
        let end = if let Some(end) = &self.range_end {
            end.as_bytes().to_vec()
        } else if self.prefix {
            prefix_end(&key)
        } else if self.from_key {
            vec![0]
        } else {
            Vec::new()
        };
        // etcd reads an empty key with a range end as "from the first key".
        if key.is_empty() && !end.is_empty() {
            key = vec![0];
        }
        Ok((key, end))
    }
}

/// The smallest key greater than every key with this prefix (`\0`, meaning
/// "to the end", when there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> KeyRange {
        KeyRange {
            key: key.into(),
            range_end: end.map(Into::into),
            prefix,
            from_key,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            range("k", None, false, false).to_etcd().unwrap(),
            (b"k".to_vec(), vec![])
        );
        assert_eq!(
            range("a", Some("c"), false, false).to_etcd().unwrap(),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert_eq!(
            range("b", None, false, true).to_etcd().unwrap(),
            (b"b".to_vec(), vec![0])
        );
        assert_eq!(
            range("", None, true, false).to_etcd().unwrap(),
            (vec![0], vec![0])
        );
        assert!(range("a", Some("c"), true, false).to_etcd().is_err());
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
    }
}

//! Streaming aggregation of a scan: each key is added once and forgotten;
//! what is kept is bounded by the number of buckets and N.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Totals of one prefix.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct PrefixStats {
    /// The prefix, ending in `/` (`...*` for a folded bucket).
    pub prefix: String,
    /// Its level below the scanned prefix (1: the first `/`-separated part).
    pub depth: usize,
    /// Keys under it.
    pub keys: u64,
    /// Bytes of those keys.
    pub key_bytes: u64,
    /// Bytes of their values.
    pub value_bytes: u64,
    /// The oldest last write among them (smallest mod revision).
    pub min_mod_revision: i64,
    /// The newest last write among them (largest mod revision).
    pub max_mod_revision: i64,
}

/// One of the largest keys.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TopKey {
    /// The key (bytes that are not UTF-8 shown as U+FFFD).
    pub key: String,
    /// Bytes of its value.
    pub value_bytes: u64,
    /// Its last write.
    pub mod_revision: i64,
}

/// Kubernetes objects of one resource in one namespace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ResourceStats {
    /// The resource: `pods`, `secrets`, `widgets` (a CRD's plural), or a
    /// core resource's sub-store such as `services/specs`.
    pub resource: String,
    /// The API group (`""`: core or built-in, `example.com` for a CRD).
    pub group: String,
    /// The namespace (`""`: cluster-scoped; `*`: folded).
    pub namespace: String,
    /// Objects.
    pub keys: u64,
    /// Bytes of their values.
    pub value_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Totals {
    keys: u64,
    key_bytes: u64,
    value_bytes: u64,
    min_rev: i64,
    max_rev: i64,
}

impl Totals {
    fn new() -> Self {
        Totals {
            keys: 0,
            key_bytes: 0,
            value_bytes: 0,
            min_rev: i64::MAX,
            max_rev: 0,
        }
    }

    fn add(&mut self, key_bytes: u64, value_bytes: u64, rev: i64) {
        self.keys += 1;
        self.key_bytes += key_bytes;
        self.value_bytes += value_bytes;
        self.min_rev = self.min_rev.min(rev);
        self.max_rev = self.max_rev.max(rev);
    }
}

/// `(group, resource, namespace)` of a Kubernetes key (`/registry/...`):
/// `/registry/<resource>/<namespace>/<name>`, `/registry/<resource>/<name>`
/// (cluster-scoped), `/registry/<group>/<resource>/...` where the group has
/// a dot (CRDs, aggregated APIs), and core sub-stores such as
/// `/registry/services/specs/<namespace>/<name>`. `None` for other keys.
///
/// ```
/// use etcd_monitor::keyspace::kubernetes_resource;
/// assert_eq!(kubernetes_resource(b"/registry/pods/ns-a/web-0"), Some(("".into(), "pods".into(), "ns-a".into())));
/// assert_eq!(kubernetes_resource(b"/registry/example.com/widgets/ns-c/w1"), Some(("example.com".into(), "widgets".into(), "ns-c".into())));
/// assert_eq!(kubernetes_resource(b"/registry/namespaces/default"), Some(("".into(), "namespaces".into(), "".into())));
/// assert_eq!(kubernetes_resource(b"/other/key"), None);
/// ```
pub fn kubernetes_resource(key: &[u8]) -> Option<(String, String, String)> {
    let mut buf = Vec::new();
    resource_key(key, &mut buf).then(|| split_resource_key(&buf))
}

/// Writes `group \0 resource \0 namespace` of a Kubernetes key into `buf`
/// (cleared first); false for other keys. No allocation once `buf` is big
/// enough: this runs for every key of a scan.
fn resource_key(key: &[u8], buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let Some(rest) = key.strip_prefix(b"/registry/") else {
        return false;
    };
    // Up to the first four parts, and whether more follow.
    let mut parts: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for part in rest.split(|b| *b == b'/') {
        if n == parts.len() {
            n += 1;
            break;
        }
        parts[n] = part;
        n += 1;
    }
    let (group, resource, after): (&[u8], &[u8], usize) = if n >= 3 && parts[0].contains(&b'.') {
        (parts[0], parts[1], 2)
    } else if n >= 2 {
        (&[], parts[0], 1)
    } else {
        return false;
    };
    buf.extend_from_slice(group);
    buf.push(0);
    buf.extend_from_slice(resource);
    match n - after {
        // <name>: cluster-scoped.
        1 => buf.push(0),
        // <namespace>/<name>.
        2 => {
            buf.push(0);
            buf.extend_from_slice(parts[after]);
        }
        // <sub-store>/<namespace>/...
        _ => {
            buf.push(b'/');
            buf.extend_from_slice(parts[after]);
            buf.push(0);
            buf.extend_from_slice(parts[after + 1]);
        }
    }
    true
}

fn split_resource_key(buf: &[u8]) -> (String, String, String) {
    let mut it = buf.splitn(3, |b| *b == 0);
    let mut next = || String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    let group = next();
    let resource = next();
    let namespace = next();
    (group, resource, namespace)
}

/// An entry of the top-N heap: value bytes, then the key (reversed, so of
/// equal sizes the first key in byte order ranks higher), mod revision.
type Ranked = Reverse<(u64, Reverse<Vec<u8>>, i64)>;

/// Adds keys one at a time; [`Aggregator::finish`] gives the sorted results.
#[derive(Debug)]
pub struct Aggregator {
    prefix_len: usize,
    depth: usize,
    top: usize,
    max_buckets: usize,
    /// Per level (index 0: level 1), prefix -> totals.
    prefixes: Vec<HashMap<Vec<u8>, Totals>>,
    /// Buckets each level may hold before folding: `max_buckets` split
    /// evenly, so many deep prefixes never fold a shallow one (a growth
    /// rule's `/registry/events/` stays exact however many namespaces).
    per_level: usize,
    /// Real (not folded) buckets per level.
    level_real: Vec<usize>,
    /// `group \0 resource \0 namespace` -> totals.
    resources: HashMap<Vec<u8>, Totals>,
    resource_buf: Vec<u8>,
    heap: BinaryHeap<Ranked>,
    total: Totals,
    folded_keys: u64,
}

impl Aggregator {
    /// An aggregator of keys under `prefix`, `depth` levels deep, keeping
    /// the `top` largest keys and at most `max_buckets` prefix buckets and as
    /// many resource buckets (more are folded into `*` buckets).
    pub fn new(prefix: &[u8], depth: usize, top: usize, max_buckets: usize) -> Self {
        Aggregator {
            prefix_len: prefix.len(),
            depth,
            top,
            max_buckets,
            prefixes: vec![HashMap::new(); depth],
            per_level: (max_buckets / depth.max(1)).max(1),
            level_real: vec![0; depth],
            resources: HashMap::new(),
            resource_buf: Vec::new(),
            heap: BinaryHeap::with_capacity(top + 1),
            total: Totals::new(),
            folded_keys: 0,
        }
    }

    /// Counts one key.
    pub fn add(&mut self, key: &[u8], value_bytes: u64, mod_revision: i64) {
        let key_bytes = key.len() as u64;
        self.total.add(key_bytes, value_bytes, mod_revision);
        let mut folded = false;
        // Level boundaries: each `/` after the scanned prefix, except one
        // right at its start (`/registry` + `/pods/...`).
        let rest = &key[self.prefix_len.min(key.len())..];
        let mut parent_end = self.prefix_len;
        let mut level = 0;
        for (i, b) in rest.iter().enumerate() {
            if *b != b'/' || i == 0 || level == self.depth {
                continue;
            }
            level += 1;
            let end = self.prefix_len + i + 1;
            let map = &mut self.prefixes[level - 1];
            if let Some(t) = map.get_mut(&key[..end]) {
                t.add(key_bytes, value_bytes, mod_revision);
            } else {
                // Fold buckets do not count: at most one per parent.
                let bucket = if self.level_real[level - 1] < self.per_level {
                    self.level_real[level - 1] += 1;
                    key[..end].to_vec()
                } else {
                    folded = true;
                    let mut other = key[..parent_end].to_vec();
                    other.push(b'*');
                    other
                };
                map.entry(bucket).or_insert_with(Totals::new).add(
                    key_bytes,
                    value_bytes,
                    mod_revision,
                );
            }
            parent_end = end;
        }
        if resource_key(key, &mut self.resource_buf) {
            if let Some(t) = self.resources.get_mut(self.resource_buf.as_slice()) {
                t.add(key_bytes, value_bytes, mod_revision);
            } else {
                let mut bucket = self.resource_buf.clone();
                if self.resources.len() >= self.max_buckets {
                    // Fold the namespace: keep group and resource.
                    let cut = bucket.iter().rposition(|b| *b == 0).unwrap_or(bucket.len());
                    bucket.truncate(cut + 1);
                    bucket.push(b'*');
                    folded = true;
                }
                self.resources
                    .entry(bucket)
                    .or_insert_with(Totals::new)
                    .add(key_bytes, value_bytes, mod_revision);
            }
        }
        if folded {
            self.folded_keys += 1;
        }
        if self.top > 0 {
            let smallest = self.heap.peek().map(|Reverse((v, _, _))| *v);
            if self.heap.len() < self.top || smallest.is_some_and(|s| value_bytes > s) {
                self.heap
                    .push(Reverse((value_bytes, Reverse(key.to_vec()), mod_revision)));
                if self.heap.len() > self.top {
                    self.heap.pop();
                }
            }
        }
    }

    /// Keys added so far.
    pub fn keys(&self) -> u64 {
        self.total.keys
    }

    /// Key and value bytes added so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.total.key_bytes, self.total.value_bytes)
    }

    /// Keys counted in folded buckets.
    pub fn folded_keys(&self) -> u64 {
        self.folded_keys
    }

    /// The results: prefixes by level, then value bytes (largest first),
    /// then name; the top keys largest first; resources largest first.
    pub fn finish(self) -> (Vec<PrefixStats>, Vec<TopKey>, Vec<ResourceStats>) {
        let mut prefixes: Vec<PrefixStats> = self
            .prefixes
            .into_iter()
            .enumerate()
            .flat_map(|(i, level)| level.into_iter().map(move |(p, t)| ((i + 1, p), t)))
            .map(|((depth, prefix), t)| PrefixStats {
                prefix: String::from_utf8_lossy(&prefix).into_owned(),
                depth,
                keys: t.keys,
                key_bytes: t.key_bytes,
                value_bytes: t.value_bytes,
                min_mod_revision: t.min_rev,
                max_mod_revision: t.max_rev,
            })
            .collect();
        prefixes.sort_by(|a, b| {
            (a.depth, Reverse(a.value_bytes), &a.prefix).cmp(&(
                b.depth,
                Reverse(b.value_bytes),
                &b.prefix,
            ))
        });
        let mut top: Vec<TopKey> = self
            .heap
            .into_iter()
            .map(
                |Reverse((value_bytes, Reverse(key), mod_revision))| TopKey {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    value_bytes,
                    mod_revision,
                },
            )
            .collect();
        top.sort_by(|a, b| (Reverse(a.value_bytes), &a.key).cmp(&(Reverse(b.value_bytes), &b.key)));
        let mut resources: Vec<ResourceStats> = self
            .resources
            .into_iter()
            .map(|(key, t)| (split_resource_key(&key), t))
            .map(|((group, resource, namespace), t)| ResourceStats {
                resource,
                group,
                namespace,
                keys: t.keys,
                value_bytes: t.value_bytes,
            })
            .collect();
        resources.sort_by(|a, b| {
            (Reverse(a.value_bytes), &a.group, &a.resource, &a.namespace).cmp(&(
                Reverse(b.value_bytes),
                &b.group,
                &b.resource,
                &b.namespace,
            ))
        });
        (prefixes, top, resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(p: &'a [PrefixStats], prefix: &str) -> &'a PrefixStats {
        p.iter().find(|s| s.prefix == prefix).unwrap()
    }

    #[test]
    fn levels_count_from_the_scanned_prefix() {
        let mut a = Aggregator::new(b"", 3, 2, 100);
        a.add(b"/registry/pods/ns-a/p1", 10, 5);
        a.add(b"/registry/pods/ns-b/p2", 20, 7);
        a.add(b"/registry/secrets/ns-b/s1", 30, 6);
        a.add(b"flat", 1, 8);
        let (p, top, r) = a.finish();
        let reg = find(&p, "/registry/");
        assert_eq!((reg.depth, reg.keys, reg.value_bytes), (1, 3, 60));
        assert_eq!((reg.min_mod_revision, reg.max_mod_revision), (5, 7));
        assert_eq!(find(&p, "/registry/pods/").keys, 2);
        assert_eq!(find(&p, "/registry/pods/ns-b/").depth, 3);
        assert!(
            !p.iter().any(|s| s.prefix.starts_with("flat")),
            "a key without / has no prefix"
        );
        assert_eq!(
            top.iter().map(|t| t.value_bytes).collect::<Vec<_>>(),
            [30, 20]
        );
        assert_eq!(r.len(), 3);

        let mut a = Aggregator::new(b"/registry/", 1, 0, 100);
        a.add(b"/registry/pods/ns-a/p1", 10, 5);
        let (p, top, _) = a.finish();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].prefix, "/registry/pods/");
        assert!(top.is_empty());
    }

    #[test]
    fn buckets_beyond_the_cap_are_folded_and_totals_stay_exact() {
        // 4 buckets over 2 levels: 2 per level.
        let mut a = Aggregator::new(b"", 2, 1, 4);
        for i in 0..10 {
            a.add(format!("/a/{i}/k").as_bytes(), 1, 1);
        }
        // Many deep prefixes never fold a shallow one.
        a.add(b"/b/0/k", 1, 1);
        assert_eq!(a.folded_keys(), 9);
        let (p, _, _) = a.finish();
        // "/a/" and "/b/"; "/a/0/", "/a/1/" and the fold of the rest of
        // /a/'s children; /b/'s child folded too (level 2 is full).
        assert_eq!(p.len(), 6, "{p:?}");
        assert_eq!(find(&p, "/a/").keys, 10);
        assert_eq!(find(&p, "/b/").keys, 1);
        assert_eq!(find(&p, "/a/*").keys, 8);
        assert_eq!(find(&p, "/b/*").keys, 1);
        assert_eq!(
            p.iter()
                .filter(|s| s.depth == 2)
                .map(|s| s.keys)
                .sum::<u64>(),
            11
        );
    }
}

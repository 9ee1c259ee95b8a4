//! Merging the file, environment and flag layers into one YAML tree, then
//! turning it into a [`Config`] while collecting every error.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::{Config, ConfigError, ConfigErrors, Source};

/// Prefix of environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "ETCD_MONITOR_";

/// Values that override the file, applied in order (environment first, then flags).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    entries: Vec<(Source, Vec<String>, Value)>,
    endpoints: Option<(Source, Vec<String>)>,
}

impl Overrides {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key at `path` (e.g. `monitoring.health_check_interval`) to `value`.
    pub fn set(&mut self, source: Source, path: &str, value: Value) -> &mut Self {
        let segments = path.split('.').map(str::to_string).collect();
        self.entries.push((source, segments, value));
        self
    }

    /// Sets the endpoints of the single configured cluster (`--endpoints`).
    pub fn endpoints(&mut self, source: Source, endpoints: Vec<String>) -> &mut Self {
        self.endpoints = Some((source, endpoints));
        self
    }

    /// Appends `other`'s entries after ours (they take precedence).
    pub fn extend(&mut self, other: Overrides) -> &mut Self {
        self.entries.extend(other.entries);
        if other.endpoints.is_some() {
            self.endpoints = other.endpoints;
        }
        self
    }
}

/// Overrides from `ETCD_MONITOR_*` variables: `__` separates key levels and a
/// number indexes a list, e.g. `ETCD_MONITOR_MONITORING__HEALTH_CHECK_INTERVAL=5s`
/// or `ETCD_MONITOR_CLUSTERS__0__PASSWORD=...`. `ETCD_MONITOR_CONFIG` (the
/// file) and `ETCD_MONITOR_ENDPOINTS` (comma-separated, single cluster) are
/// handled by the command line.
pub fn env_overrides<I: IntoIterator<Item = (String, String)>>(vars: I) -> Overrides {
    let mut out = Overrides::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let rest = &name[ENV_PREFIX.len()..];
        if matches!(rest, "CONFIG" | "ENDPOINTS") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let is_list = path.last().is_some_and(|k| k == "endpoints");
        // Taken as a string: a password such as `123456` or `abc #x` must
        // arrive as written. A key that needs a number or a boolean gets the
        // value re-read as YAML when deserializing asks for it (see `load`).
        let value = if is_list {
            Value::Sequence(split_list(&raw).into_iter().map(Value::String).collect())
        } else {
            Value::String(raw)
        };
        out.entries.push((Source::Env(name), path, value));
    }
    out
}

/// Splits a comma-separated list, dropping empty items.
pub(crate) fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads an environment value as a YAML scalar (so `true`, `3` get their
/// types), falling back to the plain string.
fn scalar(raw: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(raw) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(raw.to_string()),
    }
}

pub(super) fn load(
    file: Option<&Path>,
    overrides: &Overrides,
    checks: &[super::Check],
) -> Result<Config, ConfigErrors> {
    let file_source = file.map_or(Source::Defaults, |p| Source::File(p.to_path_buf()));
    let mut root = match file {
        None => Value::Mapping(Mapping::new()),
        Some(path) => read_file(path)?,
    };
    // Remember which layer set each path so errors can name it.
    let mut origins: BTreeMap<String, Source> = BTreeMap::new();
    let mut errors = Vec::new();
    for (source, path, value) in &overrides.entries {
        match set_path(&mut root, path, value.clone()) {
            Ok(()) => {
                origins.insert(display_path(path), source.clone());
            }
            Err(msg) => errors.push(ConfigError {
                source: source.clone(),
                path: display_path(path),
                message: msg,
            }),
        }
    }
    if let Some((source, endpoints)) = &overrides.endpoints {
        match apply_endpoints(&mut root, endpoints) {
            Ok(()) => {
                origins.insert("clusters[0].endpoints".into(), source.clone());
            }
            Err(message) => errors.push(ConfigError {
                source: source.clone(),
                path: "clusters".into(),
                message,
            }),
        }
    }
    let source_of = |path: &str| {
        origins
            .iter()
            .filter(|(p, _)| {
                path == p.as_str()
                    || path.starts_with(&format!("{p}."))
                    || path.starts_with(&format!("{p}["))
            })
            .map(|(_, s)| s.clone())
            .next_back()
            .unwrap_or_else(|| file_source.clone())
    };

    // Deserialize; on each error record it, drop the offending value and try
    // again, so one run reports every problem.
    let mut config = None;
    for _ in 0..100 {
        match serde_path_to_error::deserialize::<_, Config>(root.clone()) {
            Ok(c) => {
                config = Some(c);
                break;
            }
            Err(e) => {
                let mut segments = path_segments(e.path());
                let message = e.inner().to_string();
                if message.starts_with("invalid type: string")
                    && matches!(
                        source_of(&render(&segments)),
                        Source::Env(_) | Source::Flag(_)
                    )
                    && retype(&mut root, &segments)
                {
                    continue; // a number or boolean given as text: try again typed
                }
                if let Some(field) = unknown_field(&message) {
                    // Some paths already end at the unknown key, some at its parent.
                    if !matches!(segments.last(), Some(Seg::Key(k)) if *k == field) {
                        segments.push(Seg::Key(field));
                    }
                }
                let path = render(&segments);
                errors.push(ConfigError {
                    source: source_of(&path),
                    path: path.clone(),
                    message: explain(&message),
                });
                if !remove_path(&mut root, &segments) {
                    break; // nothing left to drop: report what we have
                }
            }
        }
    }
    match config {
        Some(c) if errors.is_empty() => {
            let mut problems = c.problems();
            for check in checks {
                problems.extend(check(&c));
            }
            let problems: Vec<ConfigError> = problems
                .into_iter()
                .map(|(path, message)| ConfigError {
                    source: source_of(&path),
                    path,
                    message,
                })
                .collect();
            if problems.is_empty() {
                Ok(c)
            } else {
                Err(ConfigErrors(problems))
            }
        }
        Some(c) => {
            // Also report semantic problems of what did parse.
            let extra: Vec<ConfigError> = c
                .problems()
                .into_iter()
                .filter(|(p, _)| !errors.iter().any(|e| &e.path == p))
                .map(|(path, message)| ConfigError {
                    source: source_of(&path),
                    path,
                    message,
                })
                .collect();
            errors.extend(extra);
            Err(ConfigErrors(errors))
        }
        None => Err(ConfigErrors(errors)),
    }
}

fn read_file(path: &Path) -> Result<Value, ConfigErrors> {
    let source = Source::File(path.to_path_buf());
    let one = |message: String| {
        ConfigErrors(vec![ConfigError {
            source: source.clone(),
            path: String::new(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| one(format!("cannot read the configuration file: {e}")))?;
    let value: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| one(format!("not valid YAML: {e}")))?;
    match value {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        v @ Value::Mapping(_) => Ok(v),
        _ => Err(one(
            "the top level must be a mapping of keys such as clusters, monitoring, api".into(),
        )),
    }
}

fn apply_endpoints(root: &mut Value, endpoints: &[String]) -> Result<(), String> {
    let list = Value::Sequence(endpoints.iter().cloned().map(Value::String).collect());
    let clusters = root
        .get("clusters")
        .and_then(Value::as_sequence)
        .map(Vec::len)
        .unwrap_or(0);
    if clusters > 1 {
        return Err(format!(
            "--endpoints sets the endpoints of a single cluster, but the configuration defines {clusters}; edit the file instead"
        ));
    }
    set_path(
        root,
        &["clusters".into(), "0".into(), "endpoints".into()],
        list,
    )
}

/// Sets `value` at `path`, creating mappings on the way; a numeric segment
/// indexes a list (and may append one element at its end).
fn set_path(node: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((head, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    if let Ok(index) = head.parse::<usize>() {
        if node.is_null() {
            *node = Value::Sequence(Vec::new());
        }
        let Value::Sequence(items) = node else {
            return Err(format!("{head} indexes a list, but this key is not a list"));
        };
        if index == items.len() {
            items.push(Value::Mapping(Mapping::new()));
        }
        let len = items.len();
        let item = items
            .get_mut(index)
            .ok_or_else(|| format!("index {index} is past the end of a list of {len}"))?;
        return set_path(item, rest, value);
    }
    if node.is_null() {
        *node = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(map) = node else {
        return Err(format!("cannot set {head}: its parent is not a mapping"));
    };
    let child = map
        .entry(Value::String(head.clone()))
        .or_insert(Value::Null);
    set_path(child, rest, value)
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

fn render(segments: &[Seg]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn display_path(path: &[String]) -> String {
    let segments: Vec<Seg> = path
        .iter()
        .map(|s| {
            s.parse()
                .map(Seg::Index)
                .unwrap_or_else(|_| Seg::Key(s.clone()))
        })
        .collect();
    render(&segments)
}

/// Re-reads the string at `segments` as a typed YAML scalar; false when
/// that does not change it (so the error stands).
fn retype(node: &mut Value, segments: &[Seg]) -> bool {
    let mut at = node;
    for s in segments {
        let next = match s {
            Seg::Key(k) => at.get_mut(k.as_str()),
            Seg::Index(i) => at.get_mut(*i),
        };
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    let Value::String(raw) = at else {
        return false;
    };
    match scalar(raw) {
        Value::String(_) => false,
        typed => {
            *at = typed;
            true
        }
    }
}

fn remove_path(node: &mut Value, segments: &[Seg]) -> bool {
    match segments {
        [] => false,
        [Seg::Key(k)] => node
            .as_mapping_mut()
            .and_then(|m| m.remove(k.as_str()))
            .is_some(),
        [Seg::Index(i)] => match node.as_sequence_mut() {
            Some(items) if *i < items.len() => {
                items.remove(*i);
                true
            }
            _ => false,
        },
        [Seg::Key(k), rest @ ..] => node
            .get_mut(k.as_str())
            .is_some_and(|n| remove_path(n, rest)),
        [Seg::Index(i), rest @ ..] => node.get_mut(*i).is_some_and(|n| remove_path(n, rest)),
    }
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Rewords serde's messages for people editing a YAML file.
fn explain(message: &str) -> String {
    if let Some(field) = unknown_field(message) {
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| e)
            .unwrap_or("");
        return if expected.is_empty() {
            format!("unknown key {field:?}")
        } else {
            format!("unknown key {field:?} (expected {expected})")
        };
    }
    message.to_string()
}

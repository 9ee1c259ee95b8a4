//! The library's top-level modules import each other without cycles, and
//! the bottom layers (`model`, `config`) import no behaviour. Read from the
//! source: every `crate::<module>` path outside comments and test modules
//! is an edge (docs/architecture.md draws the layers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every source file of the library and the binary, with its text.
fn rust_files() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    files
}

/// Top-level module -> the top-level modules its code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in rust_files() {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let top = first.as_os_str().to_str().unwrap().trim_end_matches(".rs");
        // The binary's modules and test files are outside the layering.
        if matches!(top, "main" | "cmd" | "lib") || relative.ends_with("tests.rs") {
            continue;
        }
        let code = text.split("#[cfg(test)]").next().unwrap();
        let edges = graph.entry(top.to_string()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    // `use crate::{a::X, b::{Y, Z}}`: each group's head
                    Some(group) => group
                        .split(',')
                        .filter_map(|part| part.trim().split("::").next())
                        .collect(),
                    None => vec![rest.split("::").next().unwrap_or("")],
                };
                for name in names {
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        edges.insert(name);
                    }
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in graph.get(path.last().unwrap()).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_from(graph, start, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn the_library_modules_import_each_other_without_cycles() {
    let graph = imports();
    assert!(graph.len() > 10, "read too few modules: {graph:?}");
    for start in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, start, &mut vec![start.clone()]) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_data_layers_import_no_behaviour() {
    let graph = imports();
    assert_eq!(
        graph["model"],
        BTreeSet::new(),
        "model imports only std and serde"
    );
    let config: Vec<&String> = graph["config"].iter().collect();
    assert_eq!(
        config,
        ["model"],
        "config may use the data model, nothing else"
    );
    // The edges this file checks are there to be found at all.
    assert!(graph["alert"].contains("config") && graph["run"].contains("alert"));
}

/// `utoipa` names a schema after its type and silently keeps one of two
/// types with the same name: every type deriving `ToSchema` has a name of
/// its own in the OpenAPI document (its type name, or its `#[schema(as)]`).
#[test]
fn every_api_schema_has_its_own_name() {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut derived = 0;
    for (path, text) in rust_files() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !(line.contains("#[derive(") || line.trim_start().starts_with("Debug,"))
                || !line.contains("ToSchema")
            {
                continue;
            }
            derived += 1;
            // The attributes up to the item, then the item's name.
            let mut alias = None;
            for next in &lines[i + 1..] {
                let t = next.trim_start();
                if let Some(rest) = t.strip_prefix("#[schema(as = ") {
                    alias = rest.split(')').next().map(str::to_string);
                }
                let item = ["pub struct ", "pub enum ", "struct ", "enum "]
                    .iter()
                    .find_map(|k| t.strip_prefix(k));
                if let Some(item) = item {
                    let name: String = item
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let name = alias.take().unwrap_or(name);
                    let at = format!("{}:{}", path.display(), i + 1);
                    if let Some(first) = seen.insert(name.clone(), at.clone()) {
                        panic!("schema {name:?} is derived twice: {first} and {at}");
                    }
                    break;
                }
            }
        }
    }
    assert!(derived > 30, "found only {derived} ToSchema derives");
}

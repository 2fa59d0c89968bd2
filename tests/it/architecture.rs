//! The module layering of `src/`, checked from the source: top-level modules form no import
//! cycle, and DataFusion plans are built only in the query layer and the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The source of `file` without comment lines, so that doc links do not count as imports.
fn code(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which top-level modules each top-level module refers to through `crate::`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = code(&file);
        let edges = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Generated protobuf modules live in the crate root, below everything.
            if !name.is_empty() && name != module && name != "proto" && name != "tempopb" {
                edges.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any, as the list of modules on it.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let current = path.last().cloned().unwrap_or_else(|| start.to_string());
    for next in graph.get(&current).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_string());
            return Some(cycle);
        }
        if !path.contains(next) && path.len() < graph.len() {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(graph, start, path) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = module_graph();
    assert!(graph.contains_key("query") && graph.contains_key("tables"));
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(cycle) = cycle_from(&graph, module, &mut path) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The layers of `src/`, top first, as the crate documentation draws them.
const LAYERS: &[&[&str]] = &[
    &["server"],
    &["tempo"],
    &["api"],
    &["report"],
    &["query"],
    &["traceql", "tables", "ingest"],
    &["ingester", "cluster"],
    &["storage", "live", "generator"],
    &["schema", "config"],
    &["ids", "time", "tenant", "telemetry"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| {
            panic!("module {module} is in no layer: add it to LAYERS and the crate doc")
        })
}

#[test]
fn modules_import_only_layers_below_them() {
    for (module, imports) in module_graph() {
        for import in imports {
            assert!(
                layer_of(&import) > layer_of(&module),
                "{module} imports {import}, which is not below it"
            );
        }
    }
}

#[test]
fn plans_are_built_only_in_the_query_layer_and_the_tables() {
    let mut files = Vec::new();
    for dir in ["tempo", "api", "ingest", "ingester", "traceql"] {
        rust_files(&src().join(dir), &mut files);
    }
    files.push(src().join("main.rs"));
    for file in files {
        let text = code(&file);
        for needle in [
            "LogicalPlanBuilder",
            "SessionContext",
            "DataFrame",
            "sql_with_options",
        ] {
            assert!(!text.contains(needle), "{} uses {needle}", file.display());
        }
    }
}

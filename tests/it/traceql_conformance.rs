//! Tempo's TraceQL conformance list, read in place from `shared/conformance`.
//!
//! Every `valid` query parses, validates and survives print → parse; every `parse_fails` query
//! is rejected by the parser; every `validate_fails` query parses and is rejected as invalid;
//! every `unsupported` query parses and is rejected as unsupported. `dump` is ignored.

use spanlake::traceql::{self, ValidateError};
use yaml_rust2::{Yaml, YamlLoader};

const EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/conformance/traceql_examples.yaml"
);

/// The outcome a section demands of each of its queries; `Err` explains a miss.
fn check_entry(section: &str, query: &str) -> Result<(), String> {
    let parsed = traceql::parse(query);
    match section {
        "valid" => {
            let parsed = parsed.map_err(|e| e.to_string())?;
            traceql::validate(&parsed).map_err(|e| e.to_string())?;
            let printed = parsed.to_string();
            let reparsed = traceql::parse(&printed)
                .map_err(|e| format!("printed as {printed:?}, which fails: {e}"))?;
            if reparsed != parsed {
                return Err(format!("printed as {printed:?}, which parses differently"));
            }
            Ok(())
        }
        "parse_fails" => match parsed {
            Err(_) => Ok(()),
            Ok(q) => Err(format!("parsed as {q}")),
        },
        "validate_fails" => match traceql::validate(&parsed.map_err(|e| e.to_string())?) {
            Err(ValidateError::Invalid(_)) => Ok(()),
            Err(e) => Err(format!("expected invalid, got {e}")),
            Ok(()) => Err("validated".into()),
        },
        "unsupported" => {
            let parsed = parsed.map_err(|e| e.to_string())?;
            match traceql::validate(&parsed) {
                Err(ValidateError::Unsupported(_)) => {}
                Err(e) => return Err(format!("expected unsupported, got {e}")),
                Ok(()) => return Err("validated".into()),
            }
            let printed = parsed.to_string();
            match traceql::parse(&printed) {
                Ok(reparsed) if reparsed == parsed => Ok(()),
                _ => Err(format!("printed as {printed:?}, which does not round-trip")),
            }
        }
        _ => Ok(()),
    }
}

#[test]
fn traceql_conformance_examples_behave_as_listed() {
    let text = std::fs::read_to_string(EXAMPLES).unwrap_or_else(|e| panic!("{EXAMPLES}: {e}"));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{EXAMPLES}: {e}"));
    let doc = docs
        .first()
        .unwrap_or_else(|| panic!("{EXAMPLES} is empty"));

    let mut failures = Vec::new();
    for section in ["valid", "parse_fails", "validate_fails", "unsupported"] {
        let entries: Vec<&str> = match &doc[section] {
            Yaml::Array(items) => items.iter().filter_map(Yaml::as_str).collect(),
            _ => Vec::new(),
        };
        assert!(!entries.is_empty(), "section {section} is missing or empty");
        let mut passed = 0;
        for query in &entries {
            match check_entry(section, query) {
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!("[{section}] {query:?}: {why}")),
            }
        }
        println!("{section}: {passed}/{}", entries.len());
    }
    assert!(
        failures.is_empty(),
        "{} conformance entries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! kgateway's API validation cases for BackendConfigPolicy: every document the API server must
//! refuse is refused with the expected message, and every document it must accept is accepted.
//!
//! The cases come from `../shared/conformance/kgateway/apivalidation-bcp-cases.yaml`: each
//! document is preceded by `# wantError (regex): ...` lines (all must match some message of
//! ours) or by `# wantError: (none - must be accepted)`.

use api::backend_config_policy::{BackendConfigPolicy, validate};
use regex::Regex;

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/kgateway/apivalidation-bcp-cases.yaml"
);

struct Case {
    name: String,
    want_errors: Vec<String>,
    document: String,
}

fn read_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(CASES).unwrap_or_else(|e| panic!("reading {CASES}: {e}"));
    let mut cases = Vec::new();
    let mut current = String::new();
    let mut flush = |doc: &str| {
        let mut name = None;
        let mut want_errors = Vec::new();
        let mut must_accept = false;
        for line in doc.lines() {
            if let Some(n) = line.strip_prefix("# case:") {
                name = Some(n.trim().to_string());
            } else if let Some(re) = line.strip_prefix("# wantError (regex):") {
                want_errors.push(re.trim().to_string());
            } else if line.starts_with("# wantError:") {
                assert!(line.contains("(none"), "unexpected wantError line: {line}");
                must_accept = true;
            }
        }
        if let Some(name) = name {
            assert!(
                must_accept == want_errors.is_empty(),
                "case {name:?} must either expect errors or be accepted"
            );
            cases.push(Case {
                name,
                want_errors,
                document: doc.to_string(),
            });
        }
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&current);
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&current);
    cases
}

#[test]
fn apivalidation_cases() {
    let cases = read_cases();
    assert!(cases.len() >= 11, "found only {} cases in {CASES}", cases.len());
    let named = std::fs::read_to_string(CASES)
        .expect("the cases file reads")
        .lines()
        .filter(|l| l.starts_with("# case:"))
        .count();
    assert_eq!(cases.len(), named, "every case of {CASES} is run");
    let mut failures = Vec::new();
    for case in &cases {
        let value: serde_json::Value = match serde_yaml_ng::from_str(&case.document) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: YAML does not parse: {e}", case.name));
                continue;
            }
        };
        let policy: BackendConfigPolicy = match serde_json::from_value(value) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: does not deserialize: {e}", case.name));
                continue;
            }
        };
        let got: Vec<String> = validate(&policy).iter().map(ToString::to_string).collect();
        if case.want_errors.is_empty() {
            if !got.is_empty() {
                failures.push(format!("{}: must be accepted, got {got:#?}", case.name));
            }
            continue;
        }
        for want in &case.want_errors {
            let re = Regex::new(want).unwrap_or_else(|e| panic!("{}: bad regex {want:?}: {e}", case.name));
            if !got.iter().any(|m| re.is_match(m)) {
                failures.push(format!(
                    "{}: no message matches /{want}/; got {got:#?}",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

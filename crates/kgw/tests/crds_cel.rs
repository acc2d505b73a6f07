//! `kgw crds` carries upstream's CEL rules (`x-kubernetes-validations`), rule by rule at every
//! schema path, and `kgw crds --no-cel` none.
//!
//! Upstream, read at test time:
//! - BackendConfigPolicy: kgateway's CRD pinned in the conformance corpus
//!   (`../shared/conformance/kgateway/crd-backendconfigpolicies-main.yaml`), read in place.
//! - Gateway API v1.5.1: no package of the registries CI reaches ships its CRDs with their CEL
//!   rules (the gateway-api crate's types drop them; npm's @kubernetes-models/gateway-api ships
//!   schemas without them), so the rules were transcribed from the upstream standard install
//!   into `src/crds/gateway-api-v1.5.1-rules.yaml` (its header says from where), and that file's
//!   rules are held to the digest recorded here: a change to any rule, message or path fails
//!   until the digest is deliberately re-recorded.
//!
//! No CEL-capable API server is at hand (the test server is 1.20), so instead:
//! - every emitted rule parses as CEL;
//! - the rules run on a CEL interpreter (the `cel` crate, with CEL's strings extension as
//!   Kubernetes enables it, and `quantity()`), on objects defaulted from the emitted schema as
//!   the API server defaults them: kgateway's own API validation cases (what its e2e suite
//!   checks against a real API server) are refused with the expected messages or accepted; every
//!   Gateway API object of the conformance suite passes; invalid Gateway API objects are refused
//!   with upstream's messages;
//! - every list above a rule has maxItems (what the API server's cost estimate needs most).
//!
//! Not checked here: the rules type-checked against the schema and the API server's actual cost
//! estimate (both need the API server's CEL environment), transition rules (`oldSelf`, checked
//! on update only), and differences between cel-go and this interpreter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const KGW: &str = env!("CARGO_BIN_EXE_kgw");
const PINNED_BCP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/kgateway/crd-backendconfigpolicies-main.yaml"
);
const GATEWAY_API_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/crds/gateway-api-v1.5.1-rules.yaml"
);
const GATEWAY_API_KEYWORDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/crds/gateway-api-v1.5.1-keywords.yaml"
);
/// SHA-256 of the canonical JSON (sorted keys, no spaces, ensure_ascii off) of
/// `{"rules": RULES FILE, "keywords": KEYWORDS FILE}`, as transcribed from upstream v1.5.1.
const GATEWAY_API_RULES_DIGEST: &str = "90bb13aae828f4e205bee6f6e6443e7c08627567b66a6f04ccdf0e16694d1e94";
const GATEWAY_API_KINDS: &[&str] = &[
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
    "backendtlspolicies.gateway.networking.k8s.io",
];
const BCP: &str = "backendconfigpolicies.gateway.kgateway.dev";

/// `kgw crds ARGS`, one JSON value per CRD.
fn kgw_crds(args: &[&str]) -> Vec<Value> {
    let out = Command::new(KGW).arg("crds").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kgw crds {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_prefix("---\n")
        .expect("a YAML stream")
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str(doc).expect("a YAML document"))
        .collect()
}

fn named<'a>(crds: &'a [Value], name: &str) -> &'a Value {
    crds.iter()
        .find(|c| c["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("`kgw crds` has no CRD {name}"))
}

/// (version, schema path) -> the rules there, for every node of every version's schema that
/// has rules. Paths as in the rules files: `openAPIV3Schema.spec.rules[].matches[]`.
type RulesByPath = BTreeMap<(String, String), Vec<Value>>;

fn rules_of(crd: &Value) -> RulesByPath {
    fn walk(version: &str, path: &str, schema: &Value, out: &mut RulesByPath) {
        if let Some(rules) = schema.get("x-kubernetes-validations") {
            let list = rules.as_array().cloned().unwrap_or_else(|| vec![rules.clone()]);
            out.insert((version.to_string(), path.to_string()), list);
        }
        for (name, property) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            walk(version, &format!("{path}.{name}"), property, out);
        }
        for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
            if let Some(sub) = schema.get(key).filter(|s| s.is_object()) {
                walk(version, &format!("{path}{suffix}"), sub, out);
            }
        }
    }
    let mut out = RulesByPath::new();
    for version in crd["spec"]["versions"].as_array().expect("spec.versions") {
        let name = version["name"].as_str().expect("a version name");
        walk(
            name,
            "openAPIV3Schema",
            &version["schema"]["openAPIV3Schema"],
            &mut out,
        );
    }
    out
}

/// The rules of one CRD in a rules file (version -> path -> rules), as [`RulesByPath`].
fn rules_in_file(file: &Value, crd: &str) -> RulesByPath {
    let mut out = RulesByPath::new();
    for (version, paths) in file[crd].as_object().into_iter().flatten() {
        for (path, list) in paths.as_object().expect("path -> rules") {
            out.insert(
                (version.clone(), path.clone()),
                list.as_array().expect("a list of rules").clone(),
            );
        }
    }
    out
}

/// Every difference between upstream's rules and ours, one line each: a rule only upstream has
/// (missing), one only ours has (extra), one whose `rule` matches but whose message,
/// messageExpression, reason, fieldPath or optionalOldSelf differ (changed), and the order of
/// the rules at a path (the API server reports failures in that order).
fn compare(crd: &str, upstream: &RulesByPath, ours: &RulesByPath) -> Vec<String> {
    let mut diffs = Vec::new();
    let keys: BTreeSet<&(String, String)> = upstream.keys().chain(ours.keys()).collect();
    let empty = Vec::new();
    for key @ (version, path) in keys {
        let up = upstream.get(key).unwrap_or(&empty);
        let our = ours.get(key).unwrap_or(&empty);
        let at = format!("{crd} {version} {path}");
        for rule in up {
            match our.iter().find(|o| o["rule"] == rule["rule"]) {
                None => diffs.push(format!("{at}: missing rule {}", rule["rule"])),
                Some(o) if o != rule => diffs.push(format!(
                    "{at}: rule {} changed: upstream {rule}, ours {o}",
                    rule["rule"]
                )),
                Some(_) => {}
            }
        }
        for rule in our {
            if !up.iter().any(|u| u["rule"] == rule["rule"]) {
                diffs.push(format!("{at}: extra rule {}", rule["rule"]));
            }
        }
        let order = |list: &Vec<Value>| list.iter().map(|r| r["rule"].clone()).collect::<Vec<_>>();
        let (up_order, our_order) = (order(up), order(our));
        let same_set =
            up_order.iter().all(|r| our_order.contains(r)) && our_order.iter().all(|r| up_order.contains(r));
        if same_set && up_order != our_order {
            diffs.push(format!("{at}: the rules are in another order than upstream's"));
        }
    }
    diffs
}

fn upstream_bcp() -> RulesByPath {
    let text = std::fs::read_to_string(PINNED_BCP).unwrap_or_else(|e| panic!("reading {PINNED_BCP}: {e}"));
    let crd: Value = serde_yaml_ng::from_str(&text).expect("the pinned CRD parses");
    assert_eq!(crd["metadata"]["name"], BCP);
    rules_of(&crd)
}

fn gateway_api_file() -> Value {
    let text = std::fs::read_to_string(GATEWAY_API_RULES).unwrap();
    serde_yaml_ng::from_str(&text).expect("the Gateway API rules file parses")
}

fn gateway_api_keywords() -> Value {
    let text = std::fs::read_to_string(GATEWAY_API_KEYWORDS).unwrap();
    serde_yaml_ng::from_str(&text).expect("the Gateway API keywords file parses")
}

#[test]
fn backend_config_policy_has_kgateways_rules_at_every_path() {
    let upstream = upstream_bcp();
    assert!(
        upstream.len() >= 30,
        "the pinned CRD's rules were not found: {upstream:?}"
    );
    let crds = kgw_crds(&[]);
    let ours = rules_of(named(&crds, BCP));
    let diffs = compare(BCP, &upstream, &ours);
    assert!(
        diffs.is_empty(),
        "{} differences with kgateway's CRD:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn gateway_api_kinds_have_upstreams_rules_at_every_path() {
    let file = gateway_api_file();
    let crds = kgw_crds(&[]);
    let mut diffs = Vec::new();
    for kind in GATEWAY_API_KINDS {
        diffs.extend(compare(
            kind,
            &rules_in_file(&file, kind),
            &rules_of(named(&crds, kind)),
        ));
    }
    // Every kind kgw emits has upstream rules but ReferenceGrant, whose CRD has none.
    let with_rules: Vec<&str> = file.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: Vec<&str> = GATEWAY_API_KINDS
        .iter()
        .copied()
        .filter(|k| *k != "referencegrants.gateway.networking.k8s.io")
        .collect();
    assert_eq!(
        with_rules.iter().copied().collect::<BTreeSet<_>>(),
        expected.iter().copied().collect::<BTreeSet<_>>()
    );
    for name in file.as_object().unwrap().keys() {
        assert!(
            GATEWAY_API_KINDS.contains(&name.as_str()),
            "the rules file names {name}, which kgw does not emit"
        );
    }
    assert!(
        diffs.is_empty(),
        "{} differences with Gateway API v1.5.1:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Sorted keys, no spaces: the same digest whatever the YAML's layout.
fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            let items: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

#[test]
fn the_gateway_api_rules_are_the_ones_transcribed_from_upstream() {
    let canonical =
        canonical_json(&json!({ "rules": gateway_api_file(), "keywords": gateway_api_keywords() }));
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex, GATEWAY_API_RULES_DIGEST,
        "src/crds/gateway-api-v1.5.1-rules.yaml no longer holds the rules transcribed from Gateway API \
         v1.5.1: check each change against upstream's standard install, then record the new digest"
    );
}

/// Upstream's schema keywords the rules rely on (bounds, defaults) sit where the keywords file
/// says.
#[test]
fn gateway_api_kinds_have_upstreams_keywords_where_their_rules_read() {
    let bounds = gateway_api_keywords();
    let mut wrong = Vec::new();
    for args in [&[][..]] {
        let crds = kgw_crds(args);
        for (crd, versions) in bounds.as_object().unwrap() {
            for (version, paths) in versions.as_object().unwrap() {
                for (path, keywords) in paths.as_object().unwrap() {
                    let node = named(&crds, crd)["spec"]["versions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["name"] == version.as_str())
                        .and_then(|v| node_at(&v["schema"], path));
                    for (key, value) in keywords.as_object().unwrap() {
                        let ours = node.and_then(|n| n.get(key));
                        if ours != Some(value) {
                            wrong.push(format!("kgw crds {args:?}: {crd} {version} {path}: {key}: upstream {value}, ours {ours:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The API server estimates a rule's cost times the most elements its node can have: a rule
/// under a list with no maxItems is estimated past the budget and the CRD refused. Every list
/// on the way from the root to a rule has maxItems. (A rule on a list itself iterates it once,
/// as kgateway's on targetSelectors, which has no maxItems and which clusters accept.)
#[test]
fn every_list_above_a_rule_is_bounded() {
    let crds = kgw_crds(&[]);
    let mut unbounded = Vec::new();
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            for (v, path) in rules_of(crd).keys() {
                if v != version["name"].as_str().unwrap() {
                    continue;
                }
                // Each prefix of the path that ends at a list's items: the list is the node
                // before `[]`.
                for (i, _) in path.match_indices("[]") {
                    let list = &path[..i];
                    let node = node_at(&version["schema"], list).expect("the path exists");
                    if node.get("maxItems").is_none() {
                        unbounded.push(format!("{name} {v} {list} (above the rules at {path})"));
                    }
                }
            }
        }
    }
    unbounded.dedup();
    assert!(
        unbounded.is_empty(),
        "lists with no maxItems:\n{}",
        unbounded.join("\n")
    );
}

/// Every rule and message expression `kgw crds` emits parses as CEL.
#[test]
fn every_emitted_rule_parses_as_cel() {
    let crds = kgw_crds(&[]);
    let mut errors = Vec::new();
    let mut count = 0;
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        for ((version, path), rules) in rules_of(crd) {
            for rule in rules {
                for key in ["rule", "messageExpression"] {
                    let Some(expr) = rule.get(key) else { continue };
                    count += 1;
                    let Some(expr) = expr.as_str() else {
                        errors.push(format!("{name} {version} {path}: {key} is not a string: {expr}"));
                        continue;
                    };
                    if let Err(e) = cel::Program::compile(expr) {
                        errors.push(format!("{name} {version} {path}: {key} {expr:?}: {e}"));
                    }
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(count > 45, "only {count} CEL expressions emitted");
}

/// The parser is not blind: it refuses what is not CEL.
#[test]
fn the_cel_parser_refuses_a_broken_rule() {
    assert!(cel::Program::compile("self.a == ").is_err());
    assert!(cel::Program::compile("has(self.a) && self.all(x, x.b != '')").is_ok());
}

#[test]
fn no_cel_emits_no_rule_and_otherwise_the_generated_crds() {
    let with = kgw_crds(&[]);
    let without = kgw_crds(&["--no-cel"]);
    assert_eq!(with.len(), without.len());
    let keywords = gateway_api_keywords();
    for (w, o) in with.iter().zip(&without) {
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(
            rules_of(o).is_empty(),
            "--no-cel: {name} has rules: {:?}",
            rules_of(o)
        );
        let mut stripped = w.clone();
        strip_rules(&mut stripped);
        // The keywords that come with the rules, where the generated schema has none.
        for (version, paths) in keywords[name].as_object().into_iter().flatten() {
            for (path, words) in paths.as_object().unwrap() {
                let index = o["spec"]["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .position(|v| v["name"] == version.as_str())
                    .unwrap();
                let generated = node_at(&o["spec"]["versions"][index]["schema"], path)
                    .unwrap()
                    .clone();
                let node = node_at_mut(&mut stripped["spec"]["versions"][index]["schema"], path).unwrap();
                for key in words.as_object().unwrap().keys() {
                    if generated.get(key).is_none() {
                        node.as_object_mut().unwrap().remove(key);
                    }
                }
            }
        }
        assert_eq!(
            &stripped, o,
            "{name}: with and without CEL differ in more than the rules and their keywords"
        );
    }
}

fn strip_rules(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_rules),
        _ => {}
    }
}

/// The comparison is not blind: a missing, an extra, a changed and a reordered rule are each
/// reported, all at once.
#[test]
fn the_comparison_reports_every_difference() {
    let upstream = upstream_bcp();
    let mut ours = upstream.clone();
    let v = "v1alpha1".to_string();
    let at = |p: &str| (v.clone(), format!("openAPIV3Schema.spec{p}"));
    ours.remove(&at(".connectTimeout"));
    ours.get_mut(&at(".healthCheck"))
        .unwrap()
        .push(json!({ "rule": "true", "message": "extra" }));
    ours.get_mut(&at(".dns")).unwrap()[0]["message"] = json!("another message");
    ours.get_mut(&at(".loadBalancer")).unwrap().reverse();
    ours.insert(at(".tls.parameters"), vec![json!({ "rule": "self.x" })]);
    let diffs = compare(BCP, &upstream, &ours);
    let p = format!("{BCP} v1alpha1 openAPIV3Schema.spec");
    let duration = r#""matches(self, '^([0-9]{1,5}(h|m|s|ms)){1,4}$')""#;
    let jitter = r#""!(has(self.jitter) && has(self.refreshRate)) || duration(self.jitter) <= duration(self.refreshRate)""#;
    let want = [
        format!("{p}.connectTimeout: missing rule {duration}"),
        format!("{p}.healthCheck: extra rule \"true\""),
        format!(
            "{p}.dns: rule {jitter} changed: upstream {{\"message\":\"jitter must be less than or equal to refreshRate\",\"rule\":{jitter}}}, ours {{\"message\":\"another message\",\"rule\":{jitter}}}"
        ),
        format!("{p}.loadBalancer: the rules are in another order than upstream's"),
        format!("{p}.tls.parameters: extra rule \"self.x\""),
    ];
    let missing: Vec<&String> = want.iter().filter(|w| !diffs.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "not reported: {missing:#?}\nreported: {diffs:#?}"
    );
    assert_eq!(diffs.len(), want.len(), "reported: {diffs:#?}");
}

/// The rules sit on kgw's own schema nodes: a path the generated schema lacks fails `kgw crds`
/// (see src/crds/cel_rules.rs); here, every upstream path exists in what kgw emits with
/// `--no-cel` too, so `--no-cel` drops the rules and nothing else.
#[test]
fn every_rule_path_is_a_node_of_the_no_cel_schema() {
    let without = kgw_crds(&["--no-cel"]);
    let file = gateway_api_file();
    let mut lacking = Vec::new();
    let mut check = |crd: &str, rules: RulesByPath| {
        let schema = named(&without, crd);
        for (version, path) in rules.keys() {
            let version_schema = schema["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == version.as_str());
            let found = version_schema.and_then(|v| node_at(&v["schema"], path));
            if found.is_none() {
                lacking.push(format!("{crd} {version} {path}"));
            }
        }
    };
    check(BCP, upstream_bcp());
    for kind in GATEWAY_API_KINDS {
        check(kind, rules_in_file(&file, kind));
    }
    assert!(lacking.is_empty(), "not in kgw's schema:\n{}", lacking.join("\n"));
    assert!(Path::new(PINNED_BCP).exists());
}

fn node_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = schema.get("openAPIV3Schema")?;
    let rest = path.strip_prefix("openAPIV3Schema")?;
    let mut chars = rest;
    while !chars.is_empty() {
        if let Some(r) = chars.strip_prefix("[]") {
            node = node.get("items")?;
            chars = r;
        } else if let Some(r) = chars.strip_prefix("{}") {
            node = node.get("additionalProperties")?;
            chars = r;
        } else {
            let r = chars.strip_prefix('.')?;
            let end = r.find(['.', '[', '{']).unwrap_or(r.len());
            node = node.get("properties")?.get(&r[..end])?;
            chars = &r[end..];
        }
    }
    Some(node)
}

fn node_at_mut<'a>(schema: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = schema.get_mut("openAPIV3Schema")?;
    let mut chars = path.strip_prefix("openAPIV3Schema")?;
    while !chars.is_empty() {
        if let Some(r) = chars.strip_prefix("[]") {
            node = node.get_mut("items")?;
            chars = r;
        } else if let Some(r) = chars.strip_prefix("{}") {
            node = node.get_mut("additionalProperties")?;
            chars = r;
        } else {
            let r = chars.strip_prefix('.')?;
            let end = r.find(['.', '[', '{']).unwrap_or(r.len());
            node = node.get_mut("properties")?.get_mut(&r[..end])?;
            chars = &r[end..];
        }
    }
    Some(node)
}

/// kgateway's own API validation cases (`../shared/conformance/kgateway/apivalidation-bcp-cases.yaml`,
/// from its e2e suite against a real API server): each BackendConfigPolicy, defaulted and
/// checked by the rules `kgw crds` emits as an API server checks them (every rule on every node
/// the object has, `self` bound to that node), is refused with upstream's message exactly when
/// the case says so. This evaluates the rules on a CEL interpreter, not on an API server.
#[test]
fn the_emitted_rules_refuse_what_kgateways_api_validation_cases_refuse() {
    let crds = kgw_crds(&[]);
    let (cases, failures) = check_api_validation_cases(named(&crds, BCP));
    assert!(cases >= 11, "only {cases} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The check is not blind: without the rules, every case that must be refused is reported.
#[test]
fn without_the_rules_the_cases_to_refuse_are_accepted() {
    let crds = kgw_crds(&["--no-cel"]);
    let (cases, failures) = check_api_validation_cases(named(&crds, BCP));
    let text = std::fs::read_to_string(API_VALIDATION_CASES).unwrap();
    let to_refuse = text
        .lines()
        .filter(|l| l.starts_with("# wantError (regex): "))
        .count();
    assert!(cases >= 11);
    assert_eq!(failures.len(), to_refuse, "{failures:#?}");
}

const API_VALIDATION_CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/kgateway/apivalidation-bcp-cases.yaml"
);

/// Each case of kgateway's API validation cases checked against `crd`: (cases, failures).
fn check_api_validation_cases(crd: &Value) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(API_VALIDATION_CASES)
        .unwrap_or_else(|e| panic!("reading {API_VALIDATION_CASES}: {e}"));
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut failures = Vec::new();
    let mut count = 0;
    for doc in text.split("\n---") {
        // The file's header and the empty tail after the last `---` are no cases.
        let Some(name) = doc.lines().find_map(|l| l.strip_prefix("# case: ")) else {
            continue;
        };
        let wants: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("# wantError (regex): "))
            .collect();
        let object: Value = serde_yaml_ng::from_str(doc).expect("a case parses");
        let mut violations = Vec::new();
        validate("", schema, &object, &mut violations);
        count += 1;
        if wants.is_empty() && !violations.is_empty() {
            failures.push(format!("{name}: must be accepted, refused: {violations:?}"));
        }
        for want in wants {
            if !violations.iter().any(|v| violation_matches(v, want)) {
                failures.push(format!("{name}: want {want:?}, got {violations:?}"));
            }
        }
    }
    (count, failures)
}

/// One refusal, as an API server words it: `spec.dns.refreshRate: Invalid value: "string":
/// refreshRate must be at least 1ms`; an evaluation error (a duration that does not parse) is a
/// refusal too, worded by the interpreter.
#[derive(Debug)]
struct Violation {
    path: String,
    message: String,
    evaluation_error: Option<String>,
}

/// A case's expected error (a regex over the API server's words) against one violation: the
/// whole line when the rule said false; the path and the rule's message when evaluation failed
/// (the interpreter's error text is not cel-go's).
fn violation_matches(v: &Violation, want: &str) -> bool {
    let type_name = "string";
    let line = format!("{}: Invalid value: \"{type_name}\": {}", v.path, v.message);
    if regex_lite_match(want, &line) || regex_lite_match(want, &v.message) {
        return v.evaluation_error.is_none() || want.contains("evaluating rule");
    }
    match (&v.evaluation_error, want.split_once(": Invalid value: .*: ")) {
        (Some(_), Some((path, rest))) => {
            let message = rest.rsplit("evaluating rule: ").next().unwrap_or(rest);
            path == v.path && regex_lite_match(message, &v.message)
        }
        _ => false,
    }
}

/// The cases' regexes use `.*` and escaped brackets/parentheses only: enough to match them.
fn regex_lite_match(pattern: &str, text: &str) -> bool {
    let literal: Vec<String> = pattern
        .split(".*")
        .map(|part| {
            part.replace("\\[", "[")
                .replace("\\]", "]")
                .replace("\\(", "(")
                .replace("\\)", ")")
        })
        .collect();
    let mut rest = text;
    for part in &literal {
        match rest.find(part.as_str()) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The schema's defaults filled in, everywhere, as the API server does before validating.
fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, sub) in schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if let (false, Some(default)) = (map.contains_key(name), sub.get("default")) {
                    map.insert(name.clone(), default.clone());
                }
            }
            for (name, child) in map.iter_mut() {
                let sub = schema
                    .get("properties")
                    .and_then(|p| p.get(name))
                    .or_else(|| schema.get("additionalProperties").filter(|s| s.is_object()));
                if let Some(sub) = sub {
                    apply_defaults(sub, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                items.iter_mut().for_each(|item| apply_defaults(sub, item));
            }
        }
        _ => {}
    }
}

/// Defaults, then every rule on every node, as the API server does on create.
fn validate(path: &str, schema: &Value, value: &Value, out: &mut Vec<Violation>) {
    let mut value = value.clone();
    apply_defaults(schema, &mut value);
    check_rules(path, schema, &value, out);
}

/// Every rule on this node, then the children's.
fn check_rules(path: &str, schema: &Value, value: &Value, out: &mut Vec<Violation>) {
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let expr = rule["rule"].as_str().unwrap();
        // Transition rules compare with the stored object: not checked on create.
        if expr.contains("oldSelf") {
            continue;
        }
        let message = rule["message"].as_str().unwrap_or(expr).to_string();
        let program = compiled(expr).unwrap_or_else(|e| panic!("{path}: {expr}: {e}"));
        let mut context = cel::Context::with_env(kubernetes_env());
        context.add_variable_from_value("self", to_cel(value));
        kubernetes_functions(&mut context);
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => out.push(Violation {
                path: path.to_string(),
                message,
                evaluation_error: None,
            }),
            Ok(other) => panic!("{path}: {expr} gave {other:?}, not a bool"),
            Err(e) => out.push(Violation {
                path: path.to_string(),
                message,
                evaluation_error: Some(e.to_string()),
            }),
        }
    }
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(name)) {
                    check_rules(&join(name), sub, child, out);
                } else if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                    check_rules(&join(name), sub, child, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_rules(&format!("{path}[{i}]"), sub, item, out);
                }
            }
        }
        _ => {}
    }
}

/// CEL's standard library with the strings extension (`split`, ...), as Kubernetes enables it.
fn kubernetes_env() -> std::sync::Arc<cel::Env> {
    thread_local! {
        static ENV: std::sync::Arc<cel::Env> = {
            let mut env = cel::Env::stdlib();
            env.add_extension(cel::extensions::strings).expect("the strings extension");
            std::sync::Arc::new(env)
        };
    }
    ENV.with(std::sync::Arc::clone)
}

/// Each rule parsed once per test thread (the parser is slow in a debug build).
fn compiled(expr: &str) -> Result<std::rc::Rc<cel::Program>, String> {
    thread_local! {
        static PROGRAMS: std::cell::RefCell<BTreeMap<String, std::rc::Rc<cel::Program>>> =
            const { std::cell::RefCell::new(BTreeMap::new()) };
    }
    PROGRAMS.with(|programs| {
        if let Some(program) = programs.borrow().get(expr) {
            return Ok(program.clone());
        }
        let program = std::rc::Rc::new(cel::Program::compile(expr).map_err(|e| e.to_string())?);
        programs.borrow_mut().insert(expr.to_string(), program.clone());
        Ok(program)
    })
}

/// JSON as the API server hands it to CEL: numbers that are whole are `int`.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(s.clone().into()),
        Value::Array(items) => items.iter().map(to_cel).collect::<Vec<_>>().into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), to_cel(v)))
            .collect::<std::collections::HashMap<String, cel::Value>>()
            .into(),
    }
}

/// The Kubernetes CEL library functions the rules use that the interpreter lacks: `quantity()`
/// with `isGreaterThan`/`isLessThan` (whole quantities, as window sizes are) and the strings
/// extension's `split`.
fn kubernetes_functions(context: &mut cel::Context) {
    fn parse_quantity(text: &str) -> Option<i64> {
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, suffix) = text.split_at(split);
        let n: i64 = digits.parse().ok()?;
        let factor: i64 = match suffix {
            "" => 1,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(factor)
    }
    context
        .add_function("quantity", |s: std::sync::Arc<String>| -> cel::ResolveResult {
            parse_quantity(&s).map(cel::Value::Int).ok_or_else(|| {
                cel::ExecutionError::function_error("quantity", format!("not a quantity: {s}"))
            })
        })
        .expect("quantity() is not in the interpreter's library");
    context
        .add_function(
            "isGreaterThan",
            |cel::extractors::This(a): cel::extractors::This<i64>, b: i64| a > b,
        )
        .expect("isGreaterThan() is not in the interpreter's library");
    context
        .add_function(
            "isLessThan",
            |cel::extractors::This(a): cel::extractors::This<i64>, b: i64| a < b,
        )
        .expect("isLessThan() is not in the interpreter's library");
}

const CONFORMANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/gateway-api"
);

/// The rules (with the defaults that come with them) `kgw crds` gives the CRD of `object`'s
/// kind, applied to `object` as on create. Gateway API serves v1beta1 with v1's schema, and kgw's
/// CRDs serve only v1 for most kinds: an object of another version is checked on the first one.
fn violations_of(crds: &[Value], object: &Value) -> Vec<Violation> {
    let (group, version) = object["apiVersion"].as_str().unwrap().split_once('/').unwrap();
    let crd = crds
        .iter()
        .find(|c| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == object["kind"])
        .unwrap_or_else(|| {
            panic!(
                "`kgw crds` has no CRD for {} {}",
                object["apiVersion"], object["kind"]
            )
        });
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let served = versions
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or(&versions[0]);
    let mut out = Vec::new();
    validate("", &served["schema"]["openAPIV3Schema"], object, &mut out);
    out
}

/// Every Gateway API object of the conformance suite (base manifests and each test's), which
/// the suite applies to real clusters with upstream's CRDs, passes the rules `kgw crds` emits,
/// defaults applied: no rule reads a field that upstream defaults and kgw's schema leaves out.
#[test]
fn every_conformance_object_passes_the_emitted_rules() {
    let crds = kgw_crds(&[]);
    let mut files: Vec<_> = std::fs::read_dir(format!("{CONFORMANCE}/tests"))
        .unwrap_or_else(|e| panic!("reading {CONFORMANCE}/tests: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.push(format!("{CONFORMANCE}/base/manifests.yaml").into());
    let mut checked = 0;
    let mut refused = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---") {
            let Ok(object) = serde_yaml_ng::from_str::<Value>(doc) else {
                continue;
            };
            if !object["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("gateway.networking.k8s.io/"))
            {
                continue;
            }
            checked += 1;
            let violations = violations_of(&crds, &object);
            if !violations.is_empty() {
                refused.push(format!(
                    "{} {} {}: {violations:?}",
                    file.display(),
                    object["kind"],
                    object["metadata"]["name"]
                ));
            }
        }
    }
    assert!(checked >= 140, "only {checked} Gateway API objects in the corpus");
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

/// Objects upstream's rules refuse are refused, with upstream's message; the same objects made
/// valid pass. Each pair differs in one field.
#[test]
fn the_emitted_gateway_api_rules_refuse_with_upstreams_messages() {
    let crds = kgw_crds(&[]);
    let route = |rules: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}"
        )
    };
    let gateway = |listeners: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
             spec:\n  gatewayClassName: kgw\n  listeners:\n{listeners}"
        )
    };
    let cases: Vec<(String, String, &str)> = vec![
        (
            route("  - matches: [{path: {value: /a//b}}]\n    backendRefs: [{name: s, port: 80}]\n"),
            route("  - matches: [{path: {value: /a/b}}]\n    backendRefs: [{name: s, port: 80}]\n"),
            "spec.rules[0].matches[0].path: must not contain '//' when type one of ['Exact', 'PathPrefix']",
        ),
        (
            route("  - backendRefs: [{name: s}]\n"),
            route("  - backendRefs: [{name: s, port: 80}]\n"),
            "spec.rules[0].backendRefs[0]: Must have port for Service reference",
        ),
        (
            route(
                "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]\n    \
                 backendRefs: [{name: s, port: 80}]\n",
            ),
            route("  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]\n"),
            "spec.rules[0]: RequestRedirect filter must not be used together with backendRefs",
        ),
        (
            route("  - timeouts: {request: 1s, backendRequest: 2s}\n"),
            route("  - timeouts: {request: 2s, backendRequest: 1s}\n"),
            "spec.rules[0].timeouts: backendRequest timeout cannot be longer than request timeout",
        ),
        (
            route("  - filters: [{type: URLRewrite}]\n"),
            route("  - filters: [{type: URLRewrite, urlRewrite: {hostname: example.com}}]\n"),
            "spec.rules[0].filters[0]: filter.urlRewrite must be specified for URLRewrite filter.type",
        ),
        (
            gateway("  - {name: a, port: 80, protocol: HTTP}\n  - {name: a, port: 81, protocol: HTTP}\n"),
            gateway("  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 81, protocol: HTTP}\n"),
            "spec.listeners: Listener name must be unique within the Gateway",
        ),
        (
            gateway("  - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [], options: {}}}\n"),
            gateway("  - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}\n"),
            "spec.listeners[0].tls: certificateRefs or options must be specified when mode is Terminate",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g}\n\
             spec:\n  rules:\n  - matches: [{method: {}}]\n"
                .to_string(),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g}\n\
             spec:\n  rules:\n  - matches: [{method: {service: echo.Echo}}]\n"
                .to_string(),
            "spec.rules[0].matches[0].method: One or both of 'service' or 'method' must be specified",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p}\n\
             spec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n  validation:\n    \
             hostname: s.example.com\n    wellKnownCACertificates: System\n    \
             caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]\n"
                .to_string(),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p}\n\
             spec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n  validation:\n    \
             hostname: s.example.com\n    caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]\n"
                .to_string(),
            "spec.validation: must not contain both CACertificateRefs and WellKnownCACertificates",
        ),
    ];
    let mut wrong = Vec::new();
    for (bad, good, want) in &cases {
        let (path, message) = want.split_once(": ").unwrap();
        let bad: Value = serde_yaml_ng::from_str(bad).unwrap();
        let good: Value = serde_yaml_ng::from_str(good).unwrap();
        let refused = violations_of(&crds, &bad);
        if !refused
            .iter()
            .any(|v| v.path == path && v.message == message && v.evaluation_error.is_none())
        {
            wrong.push(format!("want {want:?}, got {refused:?}"));
        }
        let accepted = violations_of(&crds, &good);
        if !accepted.is_empty() {
            wrong.push(format!("the valid twin of {want:?} is refused: {accepted:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

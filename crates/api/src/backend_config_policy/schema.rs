//! The schema checker: the OpenAPI keywords of the CRD (bounds, lengths, patterns, enums, item
//! counts), worded as kube-openapi and the API server word them, and the two phases of the API
//! server's validation (a blocking schema error drops every CEL rule's verdict).

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use crate::error::{FieldError, FieldErrorKind};

pub(super) const SKIPPED_RULES: &str = "some validation rules were not checked because the object was invalid; \
                                        correct the existing errors to complete validation";

pub(super) const DNS_SUBDOMAIN_OR_EMPTY: &str =
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
pub(super) const KIND_PATTERN: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
pub(super) const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
pub(super) const WELL_KNOWN_CA_PATTERN: &str = r"^(System|([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]))$";
pub(super) const AGGRESSION_PATTERN: &str = r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$";

pub(super) static GROUP_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(DNS_SUBDOMAIN_OR_EMPTY).expect("pattern"));
pub(super) static KIND_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(KIND_PATTERN).expect("pattern"));
pub(super) static QUANTITY_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(QUANTITY_PATTERN).expect("pattern"));
pub(super) static WELL_KNOWN_CA_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(WELL_KNOWN_CA_PATTERN).expect("pattern"));
pub(super) static AGGRESSION_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(AGGRESSION_PATTERN).expect("pattern"));

pub(super) const TLS_VERSIONS: &[&str] = &["AUTO", "1.0", "1.1", "1.2", "1.3"];
pub(super) const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];
pub(super) const SAME_SITE: &[&str] = &["Strict", "Lax", "None"];
pub(super) const PROXY_PROTOCOL_VERSIONS: &[&str] = &["V1", "V2"];
pub(super) const LOCALITY_TYPES: &[&str] = &["WeightedLb"];

/// The type names the API server shows as the value of a failed rule on an object or a list.
pub(super) const OBJECT: &str = "object";
pub(super) const ARRAY: &str = "array";

/// Errors of the two phases: the OpenAPI schema first, then the CEL rules (and ours), which
/// are dropped when the schema phase found a blocking error, as the API server does.
#[derive(Default)]
pub(super) struct Checker {
    schema: Vec<FieldError>,
    rules: Vec<FieldError>,
    blocking: bool,
}

impl Checker {
    pub(super) fn finish(self) -> Vec<FieldError> {
        let mut out = self.schema;
        if self.blocking {
            // kubectl prints the nil path and value of the API server's error as is.
            out.push(FieldError {
                path: "<nil>".into(),
                kind: FieldErrorKind::Invalid,
                value: Some("\"null\"".into()),
                detail: SKIPPED_RULES.into(),
            });
        } else {
            out.extend(self.rules);
        }
        out
    }

    // ---- OpenAPI keywords, worded as kube-openapi and the API server word them.

    pub(super) fn minimum(&mut self, path: &str, value: Option<i64>, min: i64) -> bool {
        match value {
            Some(v) if v < min => {
                let detail = format!("{path} in body should be greater than or equal to {min}");
                self.schema.push(FieldError::invalid(path, &v, detail));
                false
            }
            _ => true,
        }
    }

    pub(super) fn maximum(&mut self, path: &str, value: Option<i64>, max: i64) -> bool {
        match value {
            Some(v) if v > max => {
                let detail = format!("{path} in body should be less than or equal to {max}");
                self.schema.push(FieldError::invalid(path, &v, detail));
                false
            }
            _ => true,
        }
    }

    pub(super) fn range(&mut self, path: &str, value: Option<i64>, min: i64, max: i64) {
        if self.minimum(path, value, min) {
            self.maximum(path, value, max);
        }
    }

    pub(super) fn min_length(&mut self, path: &str, value: &str, min: usize) {
        if value.chars().count() < min {
            let detail = format!("{path} in body should be at least {min} chars long");
            self.schema.push(FieldError::invalid(path, &value, detail));
        }
    }

    /// The API server's "Too long" error, which blocks the CEL rules.
    pub(super) fn max_length(&mut self, path: &str, value: &str, max: usize) -> bool {
        if value.chars().count() <= max {
            return true;
        }
        self.blocking = true;
        self.schema.push(FieldError::invalid(
            path,
            &value,
            format!("may not be more than {max} bytes"),
        ));
        false
    }

    pub(super) fn pattern(&mut self, path: &str, value: &str, re: &Regex) {
        if !re.is_match(value) {
            let detail = format!("{path} in body should match '{}'", re.as_str());
            self.schema.push(FieldError::invalid(path, &value, detail));
        }
    }

    /// An enum: kubectl's "Unsupported value", which blocks the CEL rules.
    pub(super) fn one_of(&mut self, path: &str, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value
            && !allowed.contains(&v)
        {
            self.blocking = true;
            self.schema.push(FieldError::unsupported(path, &v, allowed));
        }
    }

    /// The API server's "Too many" error, which blocks the CEL rules.
    pub(super) fn max_items(&mut self, path: &str, len: usize, max: usize) {
        if len > max {
            self.blocking = true;
            self.schema.push(FieldError::invalid(
                path,
                &len,
                format!("must have at most {max} items"),
            ));
        }
    }

    // ---- CEL rules.

    pub(super) fn rule_failed(&mut self, path: &str, value: &impl Serialize, message: &str) {
        self.rules.push(FieldError::invalid(path, value, message));
    }

    /// A rule whose evaluation failed: the API server reports the error and the rule.
    pub(super) fn rule_error(&mut self, path: &str, value: &impl Serialize, error: &str, message: &str) {
        self.rules.push(FieldError::invalid(
            path,
            value,
            format!("{error} evaluating rule: {message}"),
        ));
    }
}

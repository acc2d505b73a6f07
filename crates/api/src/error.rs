//! Validation errors in the shape kubectl prints them, so that a user of kgateway reads the
//! same words from `kgw apply` as from `kubectl apply`.

use std::fmt;

/// One problem with one field: `spec.tcpKeepalive.keepAliveTime: Invalid value: "500ms": ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the object's root, with `[i]` for list items: `spec.targetRefs[0].kind`.
    pub path: String,
    pub kind: FieldErrorKind,
    /// The offending value rendered as JSON (`"500ms"`, `-1`), when there is one.
    pub value: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Invalid,
    Required,
    Unsupported,
    Unknown,
    Forbidden,
}

impl FieldError {
    pub fn invalid(
        path: impl Into<String>,
        value: &impl serde::Serialize,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Invalid,
            value: Some(serde_json::to_string(value).unwrap_or_default()),
            detail: detail.into(),
        }
    }

    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// A value outside an enum: kubectl lists the supported values.
    pub fn unsupported(path: impl Into<String>, value: &impl serde::Serialize, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Unsupported,
            value: Some(serde_json::to_string(value).unwrap_or_default()),
            detail: format!("supported values: {list}"),
        }
    }

    /// A field the schema does not know (kubectl's strict field validation).
    pub fn unknown(path: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Unknown,
            value: None,
            detail: "field not declared in schema; remove it or check its spelling".into(),
        }
    }

    /// A field that is valid but that this gateway does not implement yet.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Unsupported => "Unsupported value",
            FieldErrorKind::Unknown => "Unknown field",
            FieldErrorKind::Forbidden => "Forbidden",
        };
        match &self.value {
            Some(v) => write!(f, "{}: {what}: {v}: {}", self.path, self.detail),
            None => write!(f, "{}: {what}: {}", self.path, self.detail),
        }
    }
}

/// A whole object refused: `BackendConfigPolicy "httpbin/httpbin-keepalive" is invalid: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidObject {
    pub kind: String,
    /// `namespace/name`, or `name` for an object without a namespace.
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for InvalidObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} \"{}\" is invalid: ", self.kind, self.name)?;
        if self.errors.len() == 1 {
            write!(f, "{}", self.errors[0])
        } else {
            let all = self
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            write!(f, "[{all}]")
        }
    }
}

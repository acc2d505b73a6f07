//! The resources kgateway-rs understands, read from YAML and validated as the API server would.
//!
//! Gateway API and core types come from the ecosystem crates; BackendConfigPolicy is ours, with
//! the schema of kgateway's CRD. Parsing is strict (unknown fields are refused, as with
//! `kubectl apply --validate=strict`) and every error names the object, the field and the fix.

pub mod backend_config_policy;
pub mod crd;
pub mod duration;
pub mod error;
pub mod nesting;
mod objects;
mod validate;

pub use backend_config_policy::BackendConfigPolicy;
pub use error::{FieldError, FieldErrorKind, InvalidObject};
pub use gateway_api;
pub use gateway_api::gateways::Gateway;
pub use gateway_api::httproutes::HttpRoute;
pub use k8s_openapi;
pub use k8s_openapi::api::core::v1::Service;
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
pub use objects::{
    DecodeError, Document, Kind, ManifestError, Object, ObjectKey, decode_object, parse_documents,
    parse_manifests,
};
mod unsupported;
pub mod yaml;
pub use unsupported::unsupported;

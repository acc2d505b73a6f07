//! The resources kgateway-rs understands, read from YAML and validated as the API server would.
//!
//! Gateway API and core types come from the ecosystem crates; BackendConfigPolicy is ours, with
//! the schema of kgateway's CRD. Parsing is strict (unknown fields are refused, as with
//! `kubectl apply --validate=strict`) and every error names the object, the field and the fix.

/// kgateway's controller name: kgw serves the GatewayClasses that name it.
pub const CONTROLLER_NAME: &str = "kgateway.dev/kgateway";

pub mod backend;
pub mod backend_config_policy;
pub mod crd;
pub mod duration;
pub mod error;
pub mod grpc_route;
pub mod listener_policy;
pub mod nesting;
mod objects;
mod route_filters;
pub mod tls_material;
mod validate;

pub use backend::Backend;
pub use backend_config_policy::BackendConfigPolicy;
pub use error::{FieldError, FieldErrorKind, InvalidObject};
pub use gateway_api;
pub use gateway_api::backendtlspolicies::BackendTlsPolicy;
pub use gateway_api::gatewayclasses::GatewayClass;
pub use gateway_api::gateways::Gateway;
pub use gateway_api::grpcroutes::GrpcRoute;
pub use gateway_api::httproutes::HttpRoute;
pub use gateway_api::referencegrants::ReferenceGrant;
pub use k8s_openapi;
pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
pub use listener_policy::ListenerPolicy;
pub use objects::{
    DecodeError, Document, Kind, ManifestError, NAMESPACE_NAME_LABEL, Object, ObjectKey, decode_object,
    parse_documents, parse_manifests,
};
mod unsupported;
pub mod yaml;
pub use unsupported::unsupported;

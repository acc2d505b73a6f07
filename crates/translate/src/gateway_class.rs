//! GatewayClasses: the status of the classes of our controller, and which Gateways are ours.
//!
//! A Gateway is ours unless a GatewayClass of its `gatewayClassName` exists with another
//! controller: then that controller serves it, and kgw neither serves it nor writes its status.
//! A Gateway whose class does not exist at all stays served, as standalone kgw always did (its
//! guides apply no GatewayClass).

use std::borrow::Cow;
use std::time::SystemTime;

use api::{Kind, Object};
use serde_json::Value;

use crate::features::SUPPORTED_FEATURES;
use crate::{CONTROLLER_NAME, Resources, Statuses, condition, json_object, objects, rfc3339};

/// The resources without the Gateways of other controllers' classes (no copy when there are
/// none, the usual case).
pub(crate) fn without_foreign_gateways(resources: &Resources) -> Cow<'_, Resources> {
    let foreign: Vec<_> = objects(resources, Kind::Gateway)
        .filter(|(_, o)| match o {
            Object::Gateway(gw) => !class_is_ours(resources, &gw.spec.gateway_class_name),
            _ => false,
        })
        .map(|(k, _)| k.clone())
        .collect();
    if foreign.is_empty() {
        return Cow::Borrowed(resources);
    }
    let mut kept = resources.clone();
    for key in &foreign {
        kept.remove(key);
    }
    Cow::Owned(kept)
}

/// True unless a GatewayClass `name` exists with another controller.
fn class_is_ours(resources: &Resources, name: &str) -> bool {
    let key = api::ObjectKey {
        kind: Kind::GatewayClass,
        namespace: String::new(),
        name: name.to_string(),
    };
    match resources.get(&key).map(|o| &**o) {
        Some(Object::GatewayClass(class)) => class.spec.controller_name == CONTROLLER_NAME,
        _ => true,
    }
}

/// Accepted and SupportedVersion for every class of our controller, with the features kgw
/// implements. Other controllers' classes get nothing from us.
pub(crate) fn statuses(resources: &Resources, statuses: &mut Statuses, now: SystemTime) {
    let now = rfc3339(now);
    for (key, object) in objects(resources, Kind::GatewayClass) {
        let Object::GatewayClass(class) = object else {
            continue;
        };
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        let features = SUPPORTED_FEATURES
            .iter()
            .map(|name| json_object([("name", (*name).into())]))
            .collect();
        statuses.insert(
            key.clone(),
            json_object([
                (
                    "conditions",
                    Value::Array(vec![
                        condition(
                            "Accepted",
                            true,
                            "Accepted",
                            "kgateway-rs serves the Gateways of this class",
                            &now,
                        ),
                        condition(
                            "SupportedVersion",
                            true,
                            "SupportedVersion",
                            "Gateway API v1.5 is supported",
                            &now,
                        ),
                    ]),
                ),
                ("supportedFeatures", Value::Array(features)),
            ]),
        );
    }
}

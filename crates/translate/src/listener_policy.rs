//! ListenerPolicy: settings of a Gateway's listeners' accepted connections, per port
//! (`perPort` replaces `default` whole for its port). Several policies on one port: per
//! field, the oldest policy wins, as for BackendConfigPolicy.

use std::time::SystemTime;

use api::listener_policy::ListenerConfig;
use api::{Kind, Object, ObjectKey};
use serde_json::{Value, json};
use snapshot::{Listener, ListenerConnection};

use crate::backend_policy::connection::keepalive;
use crate::{CONTROLLER_NAME, Resources, Statuses, condition, json_object, oldest_first, rfc3339};

pub(crate) fn attach(
    resources: &Resources,
    listeners: &mut [Listener],
    statuses: &mut Statuses,
    now: SystemTime,
) {
    let now_text = rfc3339(now);
    let policies = oldest_first(resources, Kind::ListenerPolicy, |o| match o {
        Object::ListenerPolicy(p) => Some(p.as_ref()),
        _ => None,
    });
    for (key, policy) in policies {
        let mut ancestors = Vec::new();
        for r in &policy.spec.target_refs {
            let gateway = ObjectKey {
                kind: Kind::Gateway,
                namespace: key.namespace.clone(),
                name: r.name.clone(),
            };
            let conditions = match resources.get(&gateway).map(|o| &**o) {
                Some(Object::Gateway(gw)) => {
                    for port in gw
                        .spec
                        .listeners
                        .iter()
                        .filter_map(|l| u16::try_from(l.port).ok())
                    {
                        let config = policy
                            .spec
                            .per_port
                            .iter()
                            .find(|p| p.port == i32::from(port))
                            .map(|p| &p.listener)
                            .or(policy.spec.default.as_ref());
                        if let (Some(config), Some(listener)) =
                            (config, listeners.iter_mut().find(|l| l.port == port))
                        {
                            fill(&mut listener.connection, config);
                        }
                    }
                    vec![
                        condition("Accepted", true, "Valid", "Policy accepted", &now_text),
                        condition("Attached", true, "Attached", "Attached to all targets", &now_text),
                    ]
                }
                _ => vec![
                    condition("Accepted", true, "Valid", "Policy accepted", &now_text),
                    condition(
                        "Attached",
                        false,
                        "Pending",
                        &format!(
                            "target Gateway {}/{} not found; the policy attaches when it exists",
                            key.namespace, r.name
                        ),
                        &now_text,
                    ),
                ],
            };
            ancestors.push(json_object([
                (
                    "ancestorRef",
                    json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": r.name, "namespace": key.namespace}),
                ),
                ("controllerName", CONTROLLER_NAME.into()),
                ("conditions", Value::Array(conditions)),
            ]));
        }
        statuses.insert(key.clone(), json_object([("ancestors", Value::Array(ancestors))]));
    }
}

/// What an older policy set stays; this one fills the rest.
fn fill(connection: &mut ListenerConnection, config: &ListenerConfig) {
    if connection.tcp_keepalive.is_none() {
        connection.tcp_keepalive = config.tcp_keepalive.as_ref().map(keepalive);
    }
    if connection.per_connection_buffer_limit_bytes.is_none() {
        connection.per_connection_buffer_limit_bytes = config
            .per_connection_buffer_limit_bytes
            .and_then(|b| u32::try_from(b).ok());
    }
}

//! The status of each Gateway and of its listeners: conditions and reasons as Gateway API
//! v1.5.1 specifies them, the route kinds each listener supports, and how many routes attached.

use std::collections::BTreeMap;

use api::ObjectKey;
use api::gateway_api::gateways::GatewayListeners;
use serde_json::{Value, json};

use crate::routes::{GATEWAY_GROUP, GatewayListener};
use crate::{Statuses, condition, json_object};

/// The route kinds a listener serves (its `supportedKinds` when allowedRoutes.kinds is unset).
const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// The route kinds a listener takes: its allowedRoutes.kinds (of Gateway API's group) among
/// those served, or every served kind when it names none.
pub(crate) fn supported_kinds(l: &GatewayListeners) -> Vec<&'static str> {
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        Some(kinds) if !kinds.is_empty() => ROUTE_KINDS
            .into_iter()
            .filter(|served| {
                kinds.iter().any(|k| {
                    k.kind == *served && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                })
            })
            .collect(),
        _ => ROUTE_KINDS.to_vec(),
    }
}

pub(crate) fn gateway_statuses(gw_listeners: &[GatewayListener], statuses: &mut Statuses, now: &str) {
    let mut by_gateway: BTreeMap<&ObjectKey, Vec<&GatewayListener>> = BTreeMap::new();
    for gl in gw_listeners {
        by_gateway.entry(gl.gateway).or_default().push(gl);
    }
    for (key, listeners) in by_gateway {
        let listener_status: Vec<Value> = listeners.iter().map(|gl| listener_status(gl, now)).collect();
        let not_valid: Vec<&str> = listeners
            .iter()
            .filter(|gl| !gl.programmed())
            .map(|gl| gl.spec().name.as_str())
            .collect();
        let gateway_accepted = if not_valid.is_empty() {
            condition("Accepted", true, "Accepted", "Successfully accepted Gateway", now)
        } else {
            condition(
                "Accepted",
                true,
                "ListenersNotValid",
                &format!("Listeners not valid: {}", not_valid.join(", ")),
                now,
            )
        };
        statuses.insert(
            key.clone(),
            json_object([
                (
                    "conditions",
                    Value::Array(vec![
                        gateway_accepted,
                        condition(
                            "Programmed",
                            true,
                            "Programmed",
                            "Successfully programmed Gateway",
                            now,
                        ),
                        condition(
                            "ResolvedRefs",
                            true,
                            "ResolvedRefs",
                            "Successfully resolved all Gateway references",
                            now,
                        ),
                    ]),
                ),
                ("listeners", Value::Array(listener_status)),
            ]),
        );
    }
}

fn listener_status(gl: &GatewayListener, now: &str) -> Value {
    let mut conditions = vec![condition(
        "Accepted",
        true,
        "Accepted",
        "Successfully accepted Listener",
        now,
    )];
    conditions.push(if gl.conflicted {
        condition(
            "Conflicted",
            true,
            "ProtocolConflict",
            &format!(
                "another listener on port {} speaks another protocol; give this one its own port",
                gl.spec().port
            ),
            now,
        )
    } else {
        condition(
            "Conflicted",
            false,
            "NoConflicts",
            "Successfully verified that Listener has no conflicts",
            now,
        )
    });
    match &gl.certificate {
        Some(Err(problem)) => {
            conditions.push(condition(
                "ResolvedRefs",
                false,
                problem.reason,
                &problem.message,
                now,
            ));
            conditions.push(condition("Programmed", false, "Invalid", &problem.message, now));
        }
        _ => {
            conditions.push(condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Successfully resolved all references",
                now,
            ));
            conditions.push(if gl.conflicted {
                condition(
                    "Programmed",
                    false,
                    "Invalid",
                    "the listener conflicts with another on its port",
                    now,
                )
            } else {
                condition(
                    "Programmed",
                    true,
                    "Programmed",
                    "Successfully programmed Listener",
                    now,
                )
            });
        }
    }
    json_object([
        ("name", gl.spec().name.as_str().into()),
        ("attachedRoutes", gl.attached.into()),
        (
            "supportedKinds",
            Value::Array(
                supported_kinds(gl.spec())
                    .into_iter()
                    .map(|kind| json!({"group": GATEWAY_GROUP, "kind": kind}))
                    .collect(),
            ),
        ),
        ("conditions", Value::Array(conditions)),
    ])
}

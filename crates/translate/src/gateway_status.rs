//! The status of each Gateway and of its listeners: conditions and reasons as Gateway API
//! v1.5.1 specifies them, the route kinds each listener supports, and how many routes attached.

use std::collections::BTreeMap;
use std::net::IpAddr;

use api::ObjectKey;
use api::gateway_api::gateways::GatewayListeners;
use serde_json::{Value, json};

use crate::gateway_addresses::Binds;
use crate::routes::{GATEWAY_GROUP, GatewayListener};
use crate::{Addressing, Statuses, condition, json_object};

/// The route kinds a listener serves (its `supportedKinds` when allowedRoutes.kinds is unset).
const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// Why a listener conflicts with another (Gateway API's Conflicted reasons): it is then neither
/// accepted nor served.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conflict {
    pub reason: &'static str,
    pub message: String,
}

/// Marks the listeners that are not distinct. Within one Gateway (Gateway API): listeners on
/// one port with different protocols all get ProtocolConflict, and listeners on one port with
/// the same protocol and hostname all get HostnameConflict; none of them wins. Across Gateways
/// that bind the same port and address, the data plane has one protocol there: the first
/// listener (in Gateway order) decides, and a later one speaking another protocol gets
/// ProtocolConflict.
pub(crate) fn find_conflicts(gw_listeners: &mut [GatewayListener], addressing: &Addressing) {
    let mut conflicts = Vec::with_capacity(gw_listeners.len());
    for gl in gw_listeners.iter() {
        let l = gl.spec();
        let siblings = || {
            gw_listeners
                .iter()
                .filter(|o| o.gateway == gl.gateway && o.index != gl.index && o.spec().port == l.port)
                .map(|o| o.spec())
        };
        let other_protocol: Vec<&str> = siblings()
            .filter(|o| o.protocol != l.protocol)
            .map(|o| o.name.as_str())
            .collect();
        let same_hostname: Vec<&str> = siblings()
            .filter(|o| o.protocol == l.protocol && same_hostname(o, l))
            .map(|o| o.name.as_str())
            .collect();
        conflicts.push(if !other_protocol.is_empty() {
            Some(Conflict {
                reason: "ProtocolConflict",
                message: format!(
                    "port {} is also used by listener(s) {} with another protocol than {}: give each protocol \
                     its own port",
                    l.port,
                    other_protocol.join(", "),
                    l.protocol
                ),
            })
        } else if !same_hostname.is_empty() {
            Some(Conflict {
                reason: "HostnameConflict",
                message: format!(
                    "listener(s) {} also use port {} with protocol {} and {}: give each listener on a port its \
                     own hostname",
                    same_hostname.join(", "),
                    l.port,
                    l.protocol,
                    l.hostname
                        .as_deref()
                        .map_or_else(|| "no hostname".to_string(), |h| format!("hostname {h}"))
                ),
            })
        } else {
            None
        });
    }
    // Across Gateways, where their binds meet (same port, and the same address or one of them
    // on every interface).
    let mut owners: Vec<(i32, Option<IpAddr>, &str, &ObjectKey)> = Vec::new();
    for (gl, conflict) in gw_listeners.iter().zip(conflicts.iter_mut()) {
        if conflict.is_some() {
            continue;
        }
        let l = gl.spec();
        let addresses: Vec<Option<IpAddr>> = match addressing.binds(gl.gateway, gl.gw) {
            Binds::Everywhere => vec![None],
            Binds::Addresses(ips) => ips.into_iter().map(Some).collect(),
            Binds::Unassigned | Binds::Unsupported(_) => Vec::new(),
        };
        let meets = |port: i32, at: Option<IpAddr>| {
            port == l.port && addresses.iter().any(|a| a.is_none() || at.is_none() || *a == at)
        };
        if let Some((_, _, protocol, owner)) = owners
            .iter()
            .find(|(port, at, protocol, _)| meets(*port, *at) && *protocol != l.protocol)
        {
            *conflict = Some(Conflict {
                reason: "ProtocolConflict",
                message: format!(
                    "Gateway {}/{} already serves {protocol} on port {} at the same address, and one port \
                     serves one protocol: move this {} listener to another port or address",
                    owner.namespace, owner.name, l.port, l.protocol
                ),
            });
            continue;
        }
        for at in addresses {
            owners.push((l.port, at, l.protocol.as_str(), gl.gateway));
        }
    }
    for (gl, conflict) in gw_listeners.iter_mut().zip(conflicts) {
        gl.conflict = conflict;
    }
}

/// Do two listeners have the same hostname (both none counts as the same)?
fn same_hostname(a: &GatewayListeners, b: &GatewayListeners) -> bool {
    let lower = |h: &Option<String>| h.as_deref().map(str::to_ascii_lowercase);
    lower(&a.hostname) == lower(&b.hostname)
}

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

/// The allowedRoutes.kinds a listener names that kgw does not serve, as `group/kind`.
fn invalid_kinds(l: &GatewayListeners) -> Vec<String> {
    l.allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
        .into_iter()
        .flatten()
        .filter(|k| {
            let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
            !(group == GATEWAY_GROUP && ROUTE_KINDS.contains(&k.kind.as_str()))
        })
        .map(|k| format!("{}/{}", k.group.as_deref().unwrap_or(GATEWAY_GROUP), k.kind))
        .collect()
}

/// What keeps a listener from being valid, for the Gateway's ListenersNotValid message.
fn problem(gl: &GatewayListener) -> Option<&'static str> {
    if let Some(c) = &gl.conflict {
        return Some(c.reason);
    }
    if let Some(Err(p)) = &gl.certificate {
        return Some(p.reason);
    }
    (!invalid_kinds(gl.spec()).is_empty()).then_some("InvalidRouteKinds")
}

pub(crate) fn gateway_statuses(gw_listeners: &[GatewayListener], statuses: &mut Statuses, now: &str) {
    let mut by_gateway: BTreeMap<&ObjectKey, Vec<&GatewayListener>> = BTreeMap::new();
    for gl in gw_listeners {
        by_gateway.entry(gl.gateway).or_default().push(gl);
    }
    for (key, listeners) in by_gateway {
        let listener_status: Vec<Value> = listeners.iter().map(|gl| listener_status(gl, now)).collect();
        let not_valid: Vec<String> = listeners
            .iter()
            .filter_map(|gl| Some(format!("{} ({})", gl.spec().name, problem(gl)?)))
            .collect();
        let any_accepted = listeners.iter().any(|gl| gl.conflict.is_none());
        let gateway_accepted = if not_valid.is_empty() {
            condition("Accepted", true, "Accepted", "Successfully accepted Gateway", now)
        } else {
            // Gateway API: ListenersNotValid, with Accepted False only when no listener is left.
            condition(
                "Accepted",
                any_accepted,
                "ListenersNotValid",
                &format!(
                    "listeners not valid: {}; their own status says why and how to fix it",
                    not_valid.join(", ")
                ),
                now,
            )
        };
        let gateway_programmed = if listeners.iter().any(|gl| gl.programmed()) {
            condition(
                "Programmed",
                true,
                "Programmed",
                "Successfully programmed Gateway",
                now,
            )
        } else {
            condition(
                "Programmed",
                false,
                "Invalid",
                "no listener of this Gateway can be served; their status says why",
                now,
            )
        };
        statuses.insert(
            key.clone(),
            json_object([
                (
                    "conditions",
                    Value::Array(
                        [
                            gateway_accepted,
                            gateway_programmed,
                            condition(
                                "ResolvedRefs",
                                true,
                                "ResolvedRefs",
                                "Successfully resolved all Gateway references",
                                now,
                            ),
                        ]
                        .into_iter()
                        .chain(crate::frontend_tls::insecure_condition(listeners[0].gw, now))
                        .collect(),
                    ),
                ),
                ("listeners", Value::Array(listener_status)),
            ]),
        );
    }
}

fn listener_status(gl: &GatewayListener, now: &str) -> Value {
    let mut conditions = Vec::with_capacity(4);
    match &gl.conflict {
        Some(c) => {
            conditions.push(condition("Accepted", false, c.reason, &c.message, now));
            conditions.push(condition("Conflicted", true, c.reason, &c.message, now));
        }
        None => {
            conditions.push(match &gl.certificate {
                // No usable CA for its client certificate validation (frontend_tls.rs).
                Some(Err(p)) if p.not_accepted.is_some() => condition(
                    "Accepted",
                    false,
                    p.not_accepted.unwrap_or_default(),
                    &p.message,
                    now,
                ),
                _ => condition(
                    "Accepted",
                    true,
                    "Accepted",
                    "Successfully accepted Listener",
                    now,
                ),
            });
            conditions.push(condition(
                "Conflicted",
                false,
                "NoConflicts",
                "Successfully verified that Listener has no conflicts",
                now,
            ));
        }
    }
    let invalid = invalid_kinds(gl.spec());
    let kinds_message = (!invalid.is_empty()).then(|| {
        format!(
            "allowedRoutes.kinds names {}, which kgw does not serve: list only HTTPRoute or GRPCRoute (group \
             gateway.networking.k8s.io)",
            invalid.join(", ")
        )
    });
    conditions.push(match (&gl.certificate, &kinds_message) {
        (Some(Err(problem)), kinds) => {
            let message = match kinds {
                Some(k) => format!("{}; also, {k}", problem.message),
                None => problem.message.clone(),
            };
            condition("ResolvedRefs", false, problem.reason, &message, now)
        }
        (_, Some(k)) => condition("ResolvedRefs", false, "InvalidRouteKinds", k, now),
        _ => condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "Successfully resolved all references",
            now,
        ),
    });
    conditions.push(match (&gl.conflict, &gl.certificate) {
        (Some(c), _) => condition(
            "Programmed",
            false,
            "Invalid",
            &format!("not served: {}", c.message),
            now,
        ),
        (None, Some(Err(problem))) => condition("Programmed", false, "Invalid", &problem.message, now),
        _ => condition(
            "Programmed",
            true,
            "Programmed",
            "Successfully programmed Listener",
            now,
        ),
    });
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

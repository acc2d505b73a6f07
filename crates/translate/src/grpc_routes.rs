//! GRPCRoutes -> routes on the listeners they attach to, with their statuses. Attachment,
//! hostnames, backend resolution and statuses are HTTPRoute's (`routes.rs`); what is gRPC's is
//! the match: a method match becomes a path match (a gRPC call is a POST to
//! `/<service>/<method>`), as kgateway translates it:
//!
//! - service and method: exact path `/<service>/<method>`;
//! - service only: every method of the service, prefix `/<service>/`;
//! - method only: that method under any service (`^/[^/]+/<method>$`);
//! - no method match: every path.
//!
//! A GRPCRoute does not make its backends speak HTTP/2: as in kgateway, the backend's
//! `appProtocol` does (`kubernetes.io/h2c`, `grpc`; see `app_protocol.rs`).
//!
//! Precedence among matches on one host, HTTPRoutes' included (Gateway API): an exact
//! service+method first, then the longer service, then a method-only match, then the catch-all;
//! more header matches first; then the older route.

use api::gateway_api::grpcroutes::{GrpcRoute, GrpcRouteRulesMatches};
use api::{Kind, Object, ObjectKey};
use serde_json::Value;
use snapshot::{Cluster, PathMatch, Route};

use crate::routes::{
    BackendRef, Candidate, Candidates, GatewayListener, ParentRef, Precedence, RouteParents, RuleAction,
    attach, host_label, rule_actions,
};
use crate::{Statuses, objects};

pub(crate) fn attach_all(
    resources: &crate::Resources,
    clusters: &[Cluster],
    gw_listeners: &mut [GatewayListener],
    candidates: &mut Candidates,
    statuses: &mut Statuses,
    now_text: &str,
) {
    for (key, object) in objects(resources, Kind::GRPCRoute) {
        let Object::GRPCRoute(route) = object else {
            continue;
        };
        let backend_refs: Vec<Vec<BackendRef>> = route
            .spec
            .rules
            .iter()
            .flatten()
            .map(|rule| {
                rule.backend_refs
                    .iter()
                    .flatten()
                    .map(|b| BackendRef {
                        group: b.group.as_deref(),
                        kind: b.kind.as_deref(),
                        name: &b.name,
                        namespace: b.namespace.as_deref(),
                        port: b.port,
                        weight: b.weight,
                    })
                    .collect()
            })
            .collect();
        let (actions, resolved) = rule_actions(resources, key, "GRPCRoute", &backend_refs, clusters);
        let parents = route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .map(|p| ParentRef::new(serde_json::to_value(p).unwrap_or(Value::Null), &key.namespace))
            .collect();
        let this = RouteParents {
            kind: "GRPCRoute",
            key,
            parents,
            hostnames: route.spec.hostnames.as_deref(),
        };
        let status = attach(
            gw_listeners,
            candidates,
            &this,
            &resolved,
            now_text,
            |list, host, port| add_rules(list, host, key, route, &actions, port),
        );
        statuses.insert(key.clone(), status);
    }
}

fn add_rules(
    list: &mut Vec<Candidate>,
    host: &str,
    key: &ObjectKey,
    route: &GrpcRoute,
    actions: &[RuleAction],
    port: u16,
) {
    let created = route
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    for (rule_index, rule) in route.spec.rules.iter().flatten().enumerate() {
        let every_call = [GrpcRouteRulesMatches::default()];
        let matches = match rule.matches.as_deref() {
            Some(m) if !m.is_empty() => m,
            _ => &every_call[..],
        };
        for (match_index, m) in matches.iter().enumerate() {
            let (path, exact, path_len) = path_match(m);
            let headers: Vec<(http::HeaderName, String)> = m
                .headers
                .iter()
                .flatten()
                .filter_map(|h| {
                    Some((
                        http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()).ok()?,
                        h.value.clone(),
                    ))
                })
                .collect();
            let name = format!(
                "listener~{port}~{}-route-{rule_index}-grpcroute-{}-{}-{rule_index}-{match_index}-matcher-0",
                host_label(host),
                key.name,
                key.namespace
            );
            let order = Precedence {
                prefix: !exact,
                path_len: std::cmp::Reverse(path_len),
                no_method: true,
                headers: std::cmp::Reverse(headers.len()),
                query_params: std::cmp::Reverse(0),
                created: (created.is_none(), created),
                route: format!("{}/{}", key.namespace, key.name),
                rule: rule_index,
                matcher: match_index,
            };
            list.push(Candidate {
                host: host.to_string(),
                route: Route {
                    name,
                    path,
                    method: None,
                    headers,
                    action: actions[rule_index].action.clone(),
                    websocket_upgrade: actions[rule_index].websocket,
                    query_params: Vec::new(),
                    filters: None,
                    timeout: None,
                    mirrors: Vec::new(),
                    cors: None,
                },
                order,
            });
        }
    }
}

/// The path match of a method match, whether it is exact, and the length it ranks by: a
/// method-only match (2) ranks below any service match (`/s/` is 3) and above the catch-all
/// `/` (1). The API admits only Exact method matches with at least a service or a method.
fn path_match(m: &GrpcRouteRulesMatches) -> (PathMatch, bool, usize) {
    let method = m.method.as_ref();
    let service = method
        .and_then(|x| x.service.as_deref())
        .filter(|s| !s.is_empty());
    let name = method.and_then(|x| x.method.as_deref()).filter(|s| !s.is_empty());
    match (service, name) {
        (Some(s), Some(n)) => {
            let path = format!("/{s}/{n}");
            let len = path.len();
            (PathMatch::Exact(path), true, len)
        }
        (Some(s), None) => (PathMatch::GrpcService(s.to_string()), false, s.len() + 2),
        (None, Some(n)) => (PathMatch::GrpcMethod(n.to_string()), false, 2),
        (None, None) => (PathMatch::Prefix("/".into()), false, 1),
    }
}

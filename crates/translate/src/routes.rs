//! Gateways and HTTPRoutes -> listeners, virtual hosts and ordered routes, with the statuses of
//! both. Work the data plane would otherwise do per request (ordering, host grouping, cluster
//! lookup) is done here, once.

use std::collections::BTreeMap;
use std::time::SystemTime;

use api::gateway_api::gateways::{GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From};
use api::gateway_api::httproutes::{HttpRouteRulesMatches, HttpRouteRulesMatchesPathType};
use api::{Gateway, HttpRoute, Kind, Object, ObjectKey};
use serde_json::Value;
use snapshot::{
    Cluster, Listener, PathMatch, Route, RouteAction, ServerCertificate, VirtualHost, WeightedCluster,
};

use crate::listener_tls::{self, RefProblem};
use crate::reference_grant::{Side, permitted};
use crate::{CONTROLLER_NAME, Statuses, cluster_name, condition, json_object, objects, rfc3339};

pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One Gateway listener a route may attach to.
pub(crate) struct GatewayListener<'a> {
    pub gateway: &'a ObjectKey,
    pub gw: &'a Gateway,
    pub index: usize,
    pub attached: usize,
    /// HTTPS: its certificate, or why it has none (then it is not programmed).
    pub certificate: Option<Result<ServerCertificate, RefProblem>>,
    /// It is not distinct from another listener: then it is not served.
    pub conflict: Option<crate::gateway_status::Conflict>,
    /// Everything translated (the Namespaces' labels, for allowedRoutes' Selector).
    pub resources: &'a crate::Resources,
}

impl GatewayListener<'_> {
    pub fn spec(&self) -> &GatewayListeners {
        &self.gw.spec.listeners[self.index]
    }

    /// Served: no certificate problem and no conflict.
    pub fn programmed(&self) -> bool {
        self.conflict.is_none() && !matches!(self.certificate, Some(Err(_)))
    }
}

/// A route rule's match, made ready for sorting by Gateway API precedence.
#[derive(Clone)]
pub(crate) struct Candidate {
    pub host: String,
    pub route: Route,
    pub order: Precedence,
}

/// Candidates by listener port and Gateway (`gateway_addresses::listeners` puts each Gateway's
/// on the addresses it binds).
pub(crate) type Candidates = BTreeMap<(u16, ObjectKey), Vec<Candidate>>;

/// Gateway API's order between matches, field by field: exact path before prefix, longer path
/// first, a method match first, more header matches first, then the older route, its
/// namespace/name, and the rule and match order within it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence {
    pub prefix: bool,
    pub path_len: std::cmp::Reverse<usize>,
    pub no_method: bool,
    pub headers: std::cmp::Reverse<usize>,
    /// More query parameter matches first (after headers, as Gateway API orders them).
    pub query_params: std::cmp::Reverse<usize>,
    /// A route without a creation time counts as the newest.
    pub created: (bool, Option<i64>),
    pub route: String,
    pub rule: usize,
    pub matcher: usize,
}

/// A route's reference to a parent, whatever the route's kind (HTTPRoute's and GRPCRoute's have
/// the same fields).
pub(crate) struct ParentRef {
    group: String,
    kind: String,
    namespace: String,
    name: String,
    section_name: Option<String>,
    port: Option<i32>,
    /// As written, with group and kind defaulted: the status's `parentRef`.
    status_ref: Value,
}

impl ParentRef {
    /// From the reference's JSON form; `route_namespace` is the default namespace.
    pub(crate) fn new(mut written: Value, route_namespace: &str) -> ParentRef {
        if let Value::Object(m) = &mut written {
            m.entry("group").or_insert_with(|| GATEWAY_GROUP.into());
            m.entry("kind").or_insert_with(|| "Gateway".into());
        }
        let text = |field: &str| written.get(field).and_then(Value::as_str).map(str::to_string);
        ParentRef {
            group: text("group").unwrap_or_default(),
            kind: text("kind").unwrap_or_default(),
            namespace: text("namespace").unwrap_or_else(|| route_namespace.to_string()),
            name: text("name").unwrap_or_default(),
            section_name: text("sectionName"),
            port: written
                .get("port")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok()),
            status_ref: written,
        }
    }
}

/// A backendRef, whatever the route's kind.
pub(crate) struct BackendRef<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

/// What the listeners know of one route: its kind, identity, parents and hostnames.
pub(crate) struct RouteParents<'a> {
    pub kind: &'static str,
    pub key: &'a ObjectKey,
    pub parents: Vec<ParentRef>,
    pub hostnames: Option<&'a [String]>,
}

pub(crate) fn listeners(
    resources: &crate::Resources,
    clusters: &[Cluster],
    statuses: &mut Statuses,
    now: SystemTime,
    addressing: &crate::Addressing,
) -> Vec<Listener> {
    let now_text = rfc3339(now);
    let mut gw_listeners: Vec<GatewayListener> = Vec::new();
    for (key, object) in objects(resources, Kind::Gateway) {
        if let Object::Gateway(gw) = object {
            for (index, l) in gw.spec.listeners.iter().enumerate() {
                gw_listeners.push(GatewayListener {
                    gateway: key,
                    gw,
                    index,
                    attached: 0,
                    certificate: crate::frontend_tls::with_client_validation(
                        resources,
                        key,
                        gw,
                        l,
                        listener_tls::certificate(resources, key, l, now),
                    ),
                    conflict: None,
                    resources,
                });
            }
        }
    }
    crate::gateway_status::find_conflicts(&mut gw_listeners, addressing);

    let mut candidates: Candidates = BTreeMap::new();
    for (key, object) in objects(resources, Kind::HTTPRoute) {
        let Object::HTTPRoute(route) = object else {
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
        let (actions, resolved) = rule_actions(resources, key, "HTTPRoute", &backend_refs, clusters);
        let actions = crate::route_filters::with_backend_filters(route, actions);
        let actions = crate::route_mirror::with_mirrors(resources, key, route, clusters, actions);
        let parents = route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .map(|p| ParentRef::new(serde_json::to_value(p).unwrap_or(Value::Null), &key.namespace))
            .collect();
        let this = RouteParents {
            kind: "HTTPRoute",
            key,
            parents,
            hostnames: route.spec.hostnames.as_deref(),
        };
        let status = attach(
            &mut gw_listeners,
            &mut candidates,
            &this,
            &resolved,
            &now_text,
            |list, host, port| add_rules(list, host, key, route, &actions, port),
        );
        statuses.insert(key.clone(), status);
    }
    crate::grpc_routes::attach_all(
        resources,
        clusters,
        &mut gw_listeners,
        &mut candidates,
        statuses,
        &now_text,
    );

    crate::gateway_status::gateway_statuses(&gw_listeners, statuses, &now_text);

    crate::gateway_addresses::write_statuses(resources, addressing, statuses, &now_text);
    crate::gateway_addresses::listeners(&gw_listeners, &mut candidates, addressing)
}

/// Attaches one route to the listeners its parentRefs name (counting it in their
/// attachedRoutes), adds its matches (`add(list, host, port)`) to the programmed ones, and
/// returns the route's status: per parent, Accepted (or why not) and ResolvedRefs.
pub(crate) fn attach(
    gw_listeners: &mut [GatewayListener],
    candidates: &mut Candidates,
    route: &RouteParents,
    resolved: &Resolved,
    now_text: &str,
    add: impl Fn(&mut Vec<Candidate>, &str, u16),
) -> Value {
    let key = route.key;
    let mut parents = Vec::new();
    for parent in &route.parents {
        let namespace = &parent.namespace;
        let siblings = programmed_hostnames(gw_listeners, Some((namespace, &parent.name)));
        let mut accepted = 0;
        // Of the listeners that refuse the route, the one that got furthest says why: a matching
        // section/port (else NoMatchingParent), then namespace and kind (NotAllowedByListeners),
        // then hostname (NoMatchingListenerHostname).
        let mut refusal: Option<(u8, &'static str, String)> = None;
        let mut refuse = |rank: u8, reason: &'static str, message: String| {
            if refusal.as_ref().is_none_or(|(r, _, _)| rank > *r) {
                refusal = Some((rank, reason, message));
            }
        };
        if parent.group == GATEWAY_GROUP && parent.kind == "Gateway" {
            let mut gateway_found = false;
            for gl in gw_listeners.iter_mut() {
                if &gl.gateway.namespace != namespace || gl.gateway.name != parent.name {
                    continue;
                }
                gateway_found = true;
                let l = &gl.gw.spec.listeners[gl.index];
                if parent.section_name.as_deref().is_some_and(|s| s != l.name)
                    || parent.port.is_some_and(|p| p != l.port)
                {
                    refuse(0, "NoMatchingParent", no_listener_message(parent));
                    continue;
                }
                if !namespace_allowed(gl, &key.namespace) {
                    refuse(
                        1,
                        "NotAllowedByListeners",
                        format!(
                            "listener {} does not allow routes from namespace {} (its allowedRoutes.namespaces): \
                             allow it there, or attach to another listener",
                            l.name, key.namespace
                        ),
                    );
                    continue;
                }
                if !crate::gateway_status::supported_kinds(l).contains(&route.kind) {
                    refuse(
                        1,
                        "NotAllowedByListeners",
                        format!(
                            "listener {} does not allow {} (its allowedRoutes.kinds); add kind {} there",
                            l.name, route.kind, route.kind
                        ),
                    );
                    continue;
                }
                let Some(hosts) = effective_hostnames(l.hostname.as_deref(), route.hostnames) else {
                    refuse(
                        2,
                        "NoMatchingListenerHostname",
                        format!(
                            "no hostname of the route intersects listener {}'s hostname {}: add one it covers to \
                             spec.hostnames",
                            l.name,
                            l.hostname.as_deref().unwrap_or_default()
                        ),
                    );
                    continue;
                };
                let Ok(port) = u16::try_from(l.port) else { continue };
                gl.attached += 1;
                accepted += 1;
                if !gl.programmed() {
                    // Attached (and counted), but the listener serves nothing until fixed.
                    continue;
                }
                let list = candidates.entry((port, gl.gateway.clone())).or_default();
                for host in &hosts {
                    if crate::listener_isolation::owned_elsewhere(
                        &siblings,
                        l.port,
                        l.hostname.as_deref(),
                        host,
                    ) {
                        continue;
                    }
                    add(list, host, port);
                }
            }
            if !gateway_found {
                refuse(
                    0,
                    "NoMatchingParent",
                    format!(
                        "Gateway {namespace}/{} not found: check parentRefs' name and namespace",
                        parent.name
                    ),
                );
            }
        } else {
            refuse(
                0,
                "NoMatchingParent",
                format!(
                    "parentRef kind {} (group \"{}\") is not served: refer to a Gateway (group {GATEWAY_GROUP})",
                    parent.kind, parent.group
                ),
            );
        }
        let reason = refusal.map(|(_, r, m)| (r, m)).unwrap_or_default();
        let mut conditions = vec![if accepted > 0 {
            condition(
                "Accepted",
                true,
                "Accepted",
                "Successfully accepted Route",
                now_text,
            )
        } else {
            condition("Accepted", false, reason.0, &reason.1, now_text)
        }];
        conditions.push(match resolved {
            Ok(()) => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Successfully resolved all references",
                now_text,
            ),
            Err((r, m)) => condition("ResolvedRefs", false, r, m, now_text),
        });
        parents.push(json_object([
            ("parentRef", parent.status_ref.clone()),
            ("controllerName", CONTROLLER_NAME.into()),
            ("conditions", Value::Array(conditions)),
        ]));
    }
    json_object([("parents", Value::Array(parents))])
}

/// The (port, hostname) of every programmed listener, or of one Gateway's (namespace, name).
fn programmed_hostnames(
    gw_listeners: &[GatewayListener],
    gateway: Option<(&str, &str)>,
) -> Vec<(i32, Option<String>)> {
    gw_listeners
        .iter()
        .filter(|gl| gl.programmed())
        .filter(|gl| gateway.is_none_or(|(ns, name)| gl.gateway.namespace == ns && gl.gateway.name == name))
        .map(|gl| (gl.spec().port, gl.spec().hostname.clone()))
        .collect()
}

/// Why no listener of a parent Gateway matches the parentRef's sectionName and port.
fn no_listener_message(parent: &ParentRef) -> String {
    let wanted = match (&parent.section_name, parent.port) {
        (Some(s), Some(p)) => format!("named {s} on port {p}"),
        (Some(s), None) => format!("named {s}"),
        (None, Some(p)) => format!("on port {p}"),
        (None, None) => String::new(),
    };
    format!(
        "Gateway {}/{} has no listener {wanted}: fix the parentRef's sectionName/port, or add the listener",
        parent.namespace, parent.name
    )
}

fn namespace_allowed(gl: &GatewayListener, route_namespace: &str) -> bool {
    let from = gl.gw.spec.listeners[gl.index]
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone())
        .unwrap_or(From::Same);
    match from {
        From::All => true,
        From::Same => gl.gateway.namespace == route_namespace,
        From::Selector => crate::namespace_selector::selects(
            gl.resources,
            gl.spec()
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.selector.as_ref()),
            route_namespace,
        ),
    }
}

/// Hostnames a route serves on a listener (Gateway API intersection); None when they do not meet.
fn effective_hostnames(listener: Option<&str>, route: Option<&[String]>) -> Option<Vec<String>> {
    let route: Vec<String> = route
        .unwrap_or_default()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let listener = listener.map(str::to_ascii_lowercase);
    match (listener, route.is_empty()) {
        (None, true) => Some(vec!["*".into()]),
        (None, false) => Some(route),
        (Some(l), true) => Some(vec![l]),
        (Some(l), false) => {
            let hosts: Vec<String> = route
                .into_iter()
                .filter_map(|r| {
                    if host_matches(&l, &r) {
                        Some(r)
                    } else if host_matches(&r, &l) {
                        Some(l.clone())
                    } else {
                        None
                    }
                })
                .collect();
            (!hosts.is_empty()).then_some(hosts)
        }
    }
}

/// Does `pattern` (exact or `*.suffix`) cover `host`?
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// Whether every backend reference of a route resolved (else the reason and message).
pub(crate) type Resolved = Result<(), (&'static str, String)>;

/// A rule's action, and whether WebSocket upgrades are enabled on its routes: kgateway enables
/// them when one of the rule's backends says `appProtocol: kubernetes.io/ws`.
#[derive(Clone)]
pub(crate) struct RuleAction {
    pub action: RouteAction,
    pub websocket: bool,
    /// The rule's RequestMirror filters (`route_mirror.rs`).
    pub mirrors: Vec<snapshot::RequestMirror>,
}

/// Per rule (`backend_refs[i]` are rule i's), the action; `route_kind` is the referring side
/// of a ReferenceGrant.
pub(crate) fn rule_actions(
    resources: &crate::Resources,
    key: &ObjectKey,
    route_kind: &'static str,
    backend_refs: &[Vec<BackendRef>],
    clusters: &[Cluster],
) -> (Vec<RuleAction>, Resolved) {
    let mut resolved: Resolved = Ok(());
    let mut actions = Vec::new();
    for rule in backend_refs {
        let mut forward = Vec::new();
        let mut websocket = false;
        for b in rule {
            let weight = b.weight.unwrap_or(1).max(0) as u32;
            let namespace = b.namespace.map_or_else(|| key.namespace.clone(), str::to_string);
            let group = b.group.unwrap_or("");
            let kind = b.kind.unwrap_or("Service");
            let (name, what) = match (group, kind) {
                ("", "Service") => (
                    cluster_name(&namespace, b.name, b.port.unwrap_or(0)),
                    format!("Service {namespace}/{} port {}", b.name, b.port.unwrap_or(0)),
                ),
                ("gateway.kgateway.dev", "Backend") => (
                    crate::backends::backend_cluster_name(&namespace, b.name),
                    format!("Backend {namespace}/{}", b.name),
                ),
                _ => {
                    resolved = Err((
                        "InvalidKind",
                        format!(
                            "backendRef kind {kind} in group \"{group}\" is not supported: refer to a Service, or a Backend \
                             of group gateway.kgateway.dev"
                        ),
                    ));
                    if weight > 0 {
                        forward.push(WeightedCluster {
                            name: format!("{group}/{kind}/{namespace}/{}", b.name),
                            index: None,
                            weight,
                            filters: None,
                        });
                    }
                    continue;
                }
            };
            let from = Side {
                group: GATEWAY_GROUP,
                kind: route_kind,
                namespace: &key.namespace,
            };
            let to = Side {
                group,
                kind,
                namespace: &namespace,
            };
            let index = if !permitted(resources, &from, &to, b.name) {
                resolved = Err((
                    "RefNotPermitted",
                    format!(
                        "backendRef to {what} crosses namespaces and no ReferenceGrant in {namespace} allows it: \
                         create one (from {route_kind} in {}, to {kind})",
                        key.namespace
                    ),
                ));
                None
            } else {
                let found = clusters.binary_search_by(|c| c.name.as_str().cmp(&name)).ok();
                if found.is_none() {
                    resolved = Err(("BackendNotFound", format!("{what} not found")));
                } else {
                    websocket |=
                        crate::app_protocol::is_websocket(resources, kind, &namespace, b.name, b.port);
                }
                found
            };
            // An invalid backend keeps its share of the traffic, answered with 500 (Gateway
            // API); a weight of 0 takes no traffic at all.
            if weight > 0 {
                forward.push(WeightedCluster {
                    name,
                    index,
                    weight,
                    filters: None,
                });
            }
        }
        actions.push(if forward.iter().any(|w| w.index.is_some()) {
            RuleAction {
                action: RouteAction::Forward(forward),
                websocket,
                mirrors: Vec::new(),
            }
        } else {
            // No backend, all weights 0, or none valid: every request gets a 500.
            RuleAction {
                action: RouteAction::Direct {
                    status: 500,
                    body: String::new(),
                },
                websocket: false,
                mirrors: Vec::new(),
            }
        });
    }
    (actions, resolved)
}

fn add_rules(
    list: &mut Vec<Candidate>,
    host: &str,
    key: &ObjectKey,
    route: &HttpRoute,
    actions: &[RuleAction],
    port: u16,
) {
    let created = route
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    for (rule_index, rule) in route.spec.rules.iter().flatten().enumerate() {
        let default_match = [HttpRouteRulesMatches::default()];
        let matches = match rule.matches.as_deref() {
            Some(m) if !m.is_empty() => m,
            _ => &default_match[..],
        };
        for (match_index, m) in matches.iter().enumerate() {
            let value = m
                .path
                .as_ref()
                .and_then(|p| p.value.clone())
                .unwrap_or_else(|| "/".into());
            let exact = matches!(
                m.path.as_ref().and_then(|p| p.r#type.as_ref()),
                Some(HttpRouteRulesMatchesPathType::Exact)
            );
            let path = if exact {
                PathMatch::Exact(value.clone())
            } else {
                PathMatch::Prefix(value.clone())
            };
            let method = m
                .method
                .as_ref()
                .and_then(|x| serde_json::to_value(x).ok())
                .and_then(|v| {
                    v.as_str()
                        .and_then(|s| http::Method::from_bytes(s.as_bytes()).ok())
                });
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
            let query_params = crate::route_query::query_params(m);
            let name = format!(
                "listener~{port}~{}-route-{rule_index}-httproute-{}-{}-{rule_index}-{match_index}-matcher-0",
                host_label(host),
                key.name,
                key.namespace
            );
            let order = Precedence {
                prefix: !exact,
                path_len: std::cmp::Reverse(value.len()),
                no_method: method.is_none(),
                headers: std::cmp::Reverse(headers.len()),
                query_params: std::cmp::Reverse(query_params.len()),
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
                    method,
                    headers,
                    action: actions[rule_index].action.clone(),
                    websocket_upgrade: actions[rule_index].websocket,
                    query_params,
                    filters: crate::route_filters::for_match(rule, m, port),
                    timeout: crate::route_timeout::timeout(rule),
                    mirrors: actions[rule_index].mirrors.clone(),
                    cors: crate::route_cors::cors(rule),
                },
                order,
            });
        }
    }
}

pub(crate) fn host_label(host: &str) -> String {
    host.replace('.', "_")
}

pub(crate) fn virtual_hosts(listener: &str, mut candidates: Vec<Candidate>) -> Vec<VirtualHost> {
    candidates.sort_by(|a, b| a.order.cmp(&b.order));
    let mut by_host: BTreeMap<String, Vec<Route>> = BTreeMap::new();
    for c in candidates {
        by_host.entry(c.host).or_default().push(c.route);
    }
    let mut hosts: Vec<VirtualHost> = by_host
        .into_iter()
        .map(|(host, routes)| VirtualHost {
            name: format!("{listener}~{}", host_label(&host)),
            domains: vec![host],
            routes,
        })
        .collect();
    snapshot::sort_virtual_hosts(&mut hosts);
    hosts
}

//! Envoy's admin `/config_dump`, rendered from the Snapshot with proto3 JSON rules: proto field
//! names in snake_case, Durations as `"5s"`, wrapped integers bare, defaults left out.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use crate::{
    BackendHost, Cluster, Discovery, Listener, PathMatch, Route, RouteAction, Snapshot, VirtualHost,
};

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// The query parameters Envoy's `/config_dump` takes.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    pub include_eds: bool,
    /// Only this repeated field of one of the dumps, e.g. `dynamic_active_clusters`.
    pub resource: Option<String>,
    /// A field mask (comma-separated paths) applied to each config, or each resource.
    pub mask: Option<String>,
    /// Keep only resources whose name matches.
    pub name_regex: Option<String>,
    /// Show private keys. Envoy's admin never does (a `private_key` shows as `[redacted]`, seen
    /// on Envoy 1.40), and neither does kgw's; the conformance test sets this to compare with
    /// kgateway's translator output, which is xDS, not a dump, and carries them.
    pub reveal_private_keys: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpError {
    BadRequest(String),
}

impl std::fmt::Display for DumpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DumpError::BadRequest(m) => f.write_str(m),
        }
    }
}

/// Renders the whole dump (or the part `options` asks for).
pub fn config_dump(snapshot: &Snapshot, options: &DumpOptions) -> Result<Value, DumpError> {
    let name_filter = match options.name_regex.as_deref() {
        Some(r) if !r.is_empty() => Some(
            regex::Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| DumpError::BadRequest(format!("Error while parsing name_regex {r}: {e}")))?,
        ),
        _ => None,
    };
    let keep = |name: &str| name_filter.as_ref().is_none_or(|re| re.is_match(name));
    let version = snapshot.version.to_string();
    let updated = timestamp(snapshot.created);

    let clusters: Vec<Value> = snapshot
        .clusters
        .iter()
        .filter(|c| keep(&c.name))
        .map(|c| json!({"version_info": version, "cluster": cluster(c), "last_updated": updated}))
        .collect();
    let redact = |mut v: Value| {
        if !options.reveal_private_keys {
            redact_private_keys(&mut v);
        }
        v
    };
    let clusters: Vec<Value> = clusters.into_iter().map(redact).collect();
    let endpoints: Vec<Value> = snapshot
        .clusters
        .iter()
        .filter(|c| keep(&c.name))
        .filter(|c| c.discovery == Discovery::Eds)
        .map(|c| json!({"version_info": version, "endpoint_config": load_assignment(c), "last_updated": updated}))
        .collect();
    let listeners: Vec<Value> = snapshot
        .listeners
        .iter()
        .filter(|l| keep(&l.name))
        .map(|l| {
            redact(json!({"name": l.name, "active_state": {
                "version_info": version, "listener": listener(l), "last_updated": updated}}))
        })
        .collect();
    let routes: Vec<Value> = snapshot
        .listeners
        .iter()
        .flat_map(crate::route_tables)
        .filter(|t| keep(&t.name))
        .map(|t| json!({"version_info": version, "route_config": route_config(&t, &snapshot.clusters), "last_updated": updated}))
        .collect();

    // (dump type, repeated field, resource @type, items), in Envoy's order.
    let mut sections: Vec<(&str, &str, &str, Vec<Value>)> = vec![(
        "ClustersConfigDump",
        "dynamic_active_clusters",
        "ClustersConfigDump.DynamicCluster",
        clusters,
    )];
    if options.include_eds {
        sections.push((
            "EndpointsConfigDump",
            "dynamic_endpoint_configs",
            "EndpointsConfigDump.DynamicEndpointConfig",
            endpoints,
        ));
    }
    sections.push((
        "ListenersConfigDump",
        "dynamic_listeners",
        "ListenersConfigDump.DynamicListener",
        listeners,
    ));
    sections.push((
        "RoutesConfigDump",
        "dynamic_route_configs",
        "RoutesConfigDump.DynamicRouteConfig",
        routes,
    ));

    let mask = options.mask.as_deref().filter(|m| !m.is_empty()).map(parse_mask);
    let mut configs = Vec::new();
    match options.resource.as_deref().filter(|r| !r.is_empty()) {
        Some(resource) => {
            let Some((_, _, item_type, items)) = sections.into_iter().find(|s| s.1 == resource) else {
                return Err(DumpError::BadRequest(format!(
                    "{resource} not found in config dump (the repeated fields are dynamic_active_clusters, \
                     dynamic_endpoint_configs with include_eds, dynamic_listeners, dynamic_route_configs)"
                )));
            };
            for item in items {
                let mut item = apply_mask(item, mask.as_deref());
                if let Value::Object(m) = &mut item {
                    let mut typed = Map::new();
                    typed.insert("@type".into(), Value::String(format!("{ADMIN}{item_type}")));
                    typed.extend(std::mem::take(m));
                    *m = typed;
                }
                configs.push(item);
            }
        }
        None => {
            for (dump_type, field, _, items) in sections {
                let mut body = Map::new();
                if !items.is_empty() {
                    body.insert(field.into(), Value::Array(items));
                }
                let body = apply_mask(Value::Object(body), mask.as_deref());
                let mut typed = Map::new();
                typed.insert("@type".into(), Value::String(format!("{ADMIN}{dump_type}")));
                if let Value::Object(b) = body {
                    typed.extend(b);
                }
                configs.push(Value::Object(typed));
            }
        }
    }
    Ok(json!({ "configs": configs }))
}

/// Every `private_key` data source, wherever it is (a listener's certificate, a cluster's
/// client certificate, inside a PROXY protocol socket), shows its content as Envoy's admin does:
/// each string in it replaced by `[redacted]`, so a file's path is not shown either.
fn redact_private_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "private_key" {
                    if let Value::Object(source) = child {
                        for s in source.values_mut() {
                            *s = Value::String("[redacted]".into());
                        }
                    }
                } else {
                    redact_private_keys(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_private_keys),
        _ => {}
    }
}

fn cluster(c: &Cluster) -> Value {
    let mut v = Map::new();
    v.insert(
        "@type".into(),
        "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
    );
    v.insert("name".into(), c.name.clone().into());
    match &c.discovery {
        Discovery::Eds => {
            // Endpoints arrive separately from the cluster, as Envoy's EDS clusters get them.
            v.insert("type".into(), "EDS".into());
            v.insert(
                "eds_cluster_config".into(),
                json!({"eds_config": {"ads": {}, "resource_api_version": "V3"}}),
            );
        }
        Discovery::Static { hosts } => {
            v.insert("type".into(), "STATIC".into());
            v.insert("load_assignment".into(), backend_load_assignment(c, hosts));
        }
        Discovery::Dns { hosts } => {
            let mut dns = Map::new();
            dns.insert(
                "@type".into(),
                "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster".into(),
            );
            if let Some(settings) = &c.upstream.dns {
                settings.render(&mut dns);
            }
            // kgateway's choice over Envoy's default (which prefers IPv6).
            dns.insert("dns_lookup_family".into(), "V4_PREFERRED".into());
            v.insert(
                "cluster_type".into(),
                json!({"name": "envoy.clusters.dns", "typed_config": dns}),
            );
            v.insert("load_assignment".into(), backend_load_assignment(c, hosts));
        }
    }
    c.upstream.render(&mut v, &c.discovery, c.protocol);
    Value::Object(v)
}

/// A Backend's hosts inline, in one locality, each with its name (which Envoy uses as the Host
/// of health checks unless the health check sets one, as kgateway leaves it then).
fn backend_load_assignment(c: &Cluster, hosts: &[BackendHost]) -> Value {
    let health_check_sets_host = c.upstream.health_check.as_ref().is_some_and(|h| h.sets_host());
    let endpoints: Vec<Value> = hosts
        .iter()
        .map(|h| {
            let health_check_config = if health_check_sets_host {
                json!({})
            } else {
                json!({ "hostname": h.host })
            };
            json!({"endpoint": {
                "address": {"socket_address": {"address": h.host, "port_value": h.port}},
                "hostname": h.host,
                "health_check_config": health_check_config,
            }})
        })
        .collect();
    if endpoints.is_empty() {
        // A blackhole: no locality at all, as kgateway writes it.
        return json!({ "cluster_name": c.name });
    }
    json!({"cluster_name": c.name, "endpoints": [{"lb_endpoints": endpoints}]})
}

/// Endpoints grouped by zone, one locality each, weighing its number of endpoints as kgateway
/// writes them.
fn load_assignment(c: &Cluster) -> Value {
    let mut v = Map::new();
    v.insert(
        "@type".into(),
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
    );
    v.insert("cluster_name".into(), c.name.clone().into());
    if !c.endpoints.is_empty() {
        let mut by_zone: std::collections::BTreeMap<Option<&str>, Vec<Value>> = Default::default();
        for e in &c.endpoints {
            by_zone
                .entry(e.zone.as_deref())
                .or_default()
                .push(json!({"endpoint": {"address": {"socket_address": {
                "address": e.address.ip().to_string(), "port_value": e.address.port()}}}}));
        }
        let localities: Vec<Value> = by_zone
            .into_iter()
            .map(|(zone, lb)| {
                let mut l = Map::new();
                if let Some(z) = zone {
                    l.insert("locality".into(), json!({ "zone": z }));
                }
                // kgateway weighs a locality as the sum of its endpoints' weights (1 each).
                l.insert("load_balancing_weight".into(), lb.len().into());
                l.insert("lb_endpoints".into(), Value::Array(lb));
                Value::Object(l)
            })
            .collect();
        v.insert("endpoints".into(), Value::Array(localities));
    }
    Value::Object(v)
}

fn listener(l: &Listener) -> Value {
    let bind = l.bind_addresses();
    let address = |a: &std::net::SocketAddr| {
        let mut sa = Map::new();
        sa.insert("address".into(), a.ip().to_string().into());
        if a.ip().is_unspecified() && a.is_ipv6() {
            sa.insert("ipv4_compat".into(), true.into());
        }
        sa.insert("port_value".into(), a.port().into());
        json!({ "socket_address": sa })
    };
    let mut v = Map::new();
    v.insert(
        "@type".into(),
        "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
    );
    v.insert("name".into(), l.name.clone().into());
    v.insert("address".into(), address(&bind[0]));
    if bind.len() > 1 {
        let extra: Vec<Value> = bind[1..]
            .iter()
            .map(|a| json!({ "address": address(a) }))
            .collect();
        v.insert("additional_addresses".into(), Value::Array(extra));
    }
    let hcm = |route_config_name: String| {
        json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "http",
                "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": route_config_name},
                "http_filters": crate::route_cors::http_filters(l, json!({"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})),
                "use_remote_address": true
            }
        })
    };
    let filter_chains = match &l.tls {
        None => json!([{ "filters": [hcm(l.name.clone())] }]),
        // HTTPS: as kgateway renders it, one filter chain per Gateway listener, chosen by the
        // SNI the tls_inspector reads.
        Some(tls) => {
            v.insert(
                "listener_filters".into(),
                json!([{
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                    }
                }]),
            );
            let chains: Vec<Value> = tls
                .certificates
                .iter()
                .enumerate()
                .map(|(index, c)| {
                    let mut chain = Map::new();
                    chain.insert("name".into(), c.name.clone().into());
                    if !c.server_names.is_empty() {
                        chain.insert(
                            "filter_chain_match".into(),
                            json!({ "server_names": c.server_names }),
                        );
                    }
                    // Each chain routes with its own table (misdirected.rs) when the port has several.
                    chain.insert("filters".into(), json!([hcm(crate::chain_route_name(l, index))]));
                    let mut context = json!({
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "common_tls_context": {
                            "tls_certificates": [{
                                "certificate_chain": { "inline_string": c.certificate_chain },
                                "private_key": { "inline_string": c.private_key },
                            }],
                            // What the data plane offers (downstream_tls.rs): HTTP/2 first.
                            "alpn_protocols": ["h2", "http/1.1"],
                        }
                    });
                    client_validation(&mut context, c.client_validation.as_ref());
                    chain.insert(
                        "transport_socket".into(),
                        json!({ "name": "envoy.transport_sockets.tls", "typed_config": context }),
                    );
                    Value::Object(chain)
                })
                .collect();
            Value::Array(chains)
        }
    };
    v.insert("filter_chains".into(), filter_chains);
    if let Some(limit) = l.connection.per_connection_buffer_limit_bytes {
        v.insert("per_connection_buffer_limit_bytes".into(), limit.into());
    }
    // Whole seconds, as the cluster's upstream_connection_options.tcp_keepalive; Envoy 1.40
    // takes it on the Listener (kgateway renders ListenerPolicy's tcpKeepalive there).
    if let Some(k) = &l.connection.tcp_keepalive {
        let mut keepalive = Map::new();
        for (name, value) in [
            ("keepalive_probes", k.probes),
            ("keepalive_time", k.time),
            ("keepalive_interval", k.interval),
        ] {
            if let Some(value) = value {
                keepalive.insert(name.into(), value.into());
            }
        }
        v.insert("tcp_keepalive".into(), Value::Object(keepalive));
    }
    Value::Object(v)
}

/// Client certificate validation on a DownstreamTlsContext: the CAs, and either a required
/// valid certificate or (AllowInsecureFallback) any certificate or none.
fn client_validation(context: &mut Value, validation: Option<&crate::ClientValidation>) {
    let Some(v) = validation else { return };
    let mut validation_context = json!({ "trusted_ca": { "inline_string": v.ca_bundle } });
    if v.allow_insecure_fallback {
        validation_context["trust_chain_verification"] = "ACCEPT_UNTRUSTED".into();
    } else {
        context["require_client_certificate"] = true.into();
    }
    context["common_tls_context"]["validation_context"] = validation_context;
}

fn route_config(t: &crate::RouteTable, clusters: &[Cluster]) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": t.name,
        "virtual_hosts": t.virtual_hosts.iter().map(|vh| virtual_host(vh, clusters)).collect::<Vec<_>>(),
        "ignore_port_in_host_matching": true,
    })
}

fn virtual_host(vh: &VirtualHost, clusters: &[Cluster]) -> Value {
    json!({
        "name": vh.name,
        "domains": vh.domains,
        "routes": vh.routes.iter().map(|r| route(r, clusters)).collect::<Vec<_>>(),
    })
}

fn route(r: &Route, clusters: &[Cluster]) -> Value {
    let mut m = Map::new();
    match &r.path {
        PathMatch::Exact(p) => {
            m.insert("path".into(), p.clone().into());
        }
        PathMatch::Prefix(p) if p == "/" => {
            m.insert("prefix".into(), "/".into());
        }
        PathMatch::Prefix(p) => {
            m.insert("path_separated_prefix".into(), p.trim_end_matches('/').into());
        }
        PathMatch::GrpcService(service) => {
            m.insert("prefix".into(), format!("/{service}/").into());
        }
        PathMatch::GrpcMethod(method) => {
            m.insert(
                "safe_regex".into(),
                json!({ "regex": format!("^/[^/]+/{method}$") }),
            );
        }
    }
    let mut headers: Vec<Value> = Vec::new();
    if let Some(method) = &r.method {
        headers.push(json!({"name": ":method", "string_match": {"exact": method.as_str()}}));
    }
    for (name, value) in &r.headers {
        headers.push(json!({"name": name.as_str(), "string_match": {"exact": value}}));
    }
    if !headers.is_empty() {
        m.insert("headers".into(), Value::Array(headers));
    }
    crate::route_query::render(&r.query_params, &mut m);
    let mut v = Map::new();
    v.insert("name".into(), r.name.clone().into());
    v.insert("match".into(), Value::Object(m));
    crate::route_cors::render(r.cors.as_deref(), &mut v);
    match &r.action {
        RouteAction::Forward(targets) => {
            let mut action = Map::new();
            if let [only] = targets.as_slice() {
                action.insert("cluster".into(), only.name.clone().into());
            } else {
                let list: Vec<Value> = targets
                    .iter()
                    .map(|c| json!({"name": c.name, "weight": c.weight}))
                    .collect();
                action.insert("weighted_clusters".into(), json!({"clusters": list}));
            }
            // Envoy hashes on the route: the first target cluster with hash policies gives them.
            if let Some(hash) = targets
                .iter()
                .filter_map(|t| t.index.and_then(|i| clusters.get(i)))
                .find_map(|c| c.upstream.route_hash_policy())
            {
                action.insert("hash_policy".into(), hash);
            }
            if r.websocket_upgrade {
                action.insert("upgrade_configs".into(), json!([{"upgrade_type": "websocket"}]));
            }
            // A backend that does not resolve has no cluster: its share is answered with 500
            // (Gateway API), where Envoy's default for a missing cluster is 503.
            if targets.iter().any(|t| t.index.is_none()) {
                action.insert(
                    "cluster_not_found_response_code".into(),
                    "INTERNAL_SERVER_ERROR".into(),
                );
            }
            crate::route_timeout::render(r.timeout, &mut action);
            crate::route_mirror::render(&r.mirrors, &mut action);
            v.insert("route".into(), Value::Object(action));
        }
        RouteAction::Direct { status, body } => {
            // An empty body is no body (Envoy leaves an unset DataSource out).
            let response = if body.is_empty() {
                json!({ "status": status })
            } else {
                json!({"status": status, "body": {"inline_string": body}})
            };
            v.insert("direct_response".into(), response);
        }
    }
    crate::route_filters::render_route(r, &mut v);
    Value::Object(v)
}

/// A proto3 JSON Duration: whole seconds as `"5s"`, fractions with 3, 6 or 9 digits.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}.{:03}s", d.as_secs(), nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}.{:06}s", d.as_secs(), nanos / 1_000)
    } else {
        format!("{}.{:09}s", d.as_secs(), nanos)
    }
}

fn timestamp(t: SystemTime) -> String {
    match jiff::Timestamp::try_from(t) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00Z".into(),
    }
}

fn parse_mask(mask: &str) -> Vec<Vec<String>> {
    mask.split(',')
        .map(|p| p.trim().split('.').map(str::to_string).collect())
        .collect()
}

/// Keeps only the masked paths, as Envoy's FieldMask does; an `Any` is looked through.
fn apply_mask(value: Value, mask: Option<&[Vec<String>]>) -> Value {
    let Some(paths) = mask else { return value };
    let mut out = Value::Object(Map::new());
    for path in paths {
        copy_path(&value, &mut out, path);
    }
    out
}

fn copy_path(src: &Value, dst: &mut Value, path: &[String]) {
    let (Value::Object(s), Value::Object(d)) = (src, &mut *dst) else {
        return;
    };
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    let Some(child) = s.get(head) else { return };
    if rest.is_empty() {
        d.insert(head.clone(), child.clone());
        return;
    }
    match child {
        Value::Array(items) => {
            let existing = d
                .entry(head.clone())
                .or_insert_with(|| Value::Array(vec![Value::Object(Map::new()); items.len()]));
            if let Value::Array(targets) = existing {
                for (item, target) in items.iter().zip(targets.iter_mut()) {
                    copy_path(item, target, rest);
                }
            }
        }
        Value::Object(_) => {
            let target = d.entry(head.clone()).or_insert_with(|| Value::Object(Map::new()));
            copy_path(child, target, rest);
            // an Any keeps its type so that the result still parses
            if let (Some(t), Value::Object(tm)) = (child.get("@type"), target) {
                tm.entry("@type").or_insert_with(|| t.clone());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "0.250s");
        assert_eq!(format_duration(Duration::from_micros(1_500_001)), "1.500001s");
    }

    #[test]
    fn https_listener_with_options() {
        let certificate = |name: &str, names: &[&str]| crate::ServerCertificate {
            name: name.into(),
            server_names: names.iter().map(|n| n.to_string()).collect(),
            certificate_chain: "CHAIN".into(),
            private_key: "SECRET KEY".into(),
            client_validation: None,
        };
        let l = Listener {
            name: "listener~443".into(),
            port: 443,
            addresses: Vec::new(),
            virtual_hosts: Vec::new(),
            tls: Some(crate::ListenerTls {
                certificates: vec![
                    certificate("api", &["api.example.com"]),
                    certificate("https", &[]),
                ],
            }),
            connection: crate::ListenerConnection {
                tcp_keepalive: Some(crate::TcpKeepalive {
                    probes: Some(3),
                    time: Some(1200),
                    interval: None,
                }),
                per_connection_buffer_limit_bytes: Some(32768),
            },
        };
        let raw = listener(&l);
        let key_of = |v: &Value| {
            v["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0]
                ["private_key"]["inline_string"]
                .clone()
        };
        // The key itself only where a caller asks for it (the conformance test).
        assert_eq!(key_of(&raw), "SECRET KEY");
        let mut v = raw.clone();
        redact_private_keys(&mut v);
        assert_eq!(
            v["listener_filters"][0]["name"],
            "envoy.filters.listener.tls_inspector"
        );
        let chains = v["filter_chains"].as_array().unwrap();
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0]["name"], "api");
        assert_eq!(
            chains[0]["filter_chain_match"]["server_names"],
            json!(["api.example.com"])
        );
        assert!(chains[1].get("filter_chain_match").is_none());
        let certs =
            &chains[0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0];
        assert_eq!(certs["certificate_chain"]["inline_string"], "CHAIN");
        assert_eq!(certs["private_key"]["inline_string"], "[redacted]");
        assert!(!v.to_string().contains("SECRET KEY"));
        assert_eq!(
            v["tcp_keepalive"],
            json!({"keepalive_probes": 3, "keepalive_time": 1200})
        );
        assert_eq!(v["per_connection_buffer_limit_bytes"], 32768);
    }
}

//! kgateway's Backend kind, type Static: one cluster `backend_<ns>_<name>_0` with the hosts
//! as written. All IP addresses: a STATIC cluster; any DNS name: a DNS cluster whose names the
//! data plane resolves (kgateway's `envoy.clusters.dns`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use api::{Kind, Object};
use serde_json::Value;
use snapshot::{BackendHost, Cluster, Discovery, Endpoint, UpstreamPolicy};

use crate::{ClusterDraft, Resources, Statuses, condition, json_object, objects, rfc3339};

pub(crate) fn backend_cluster_name(namespace: &str, name: &str) -> String {
    format!("backend_{namespace}_{name}_0")
}

pub(crate) fn clusters(
    resources: &Resources,
    out: &mut BTreeMap<String, ClusterDraft>,
    statuses: &mut Statuses,
    now: SystemTime,
) {
    let now = rfc3339(now);
    for (key, object) in objects(resources, Kind::Backend) {
        let Object::Backend(backend) = object else {
            continue;
        };
        // Validation admits only Static backends (the other types are refused as not supported).
        let Some(spec) = &backend.spec.r#static else {
            continue;
        };
        let hosts: Vec<BackendHost> = spec
            .hosts
            .iter()
            .filter_map(|h| {
                Some(BackendHost {
                    host: h.host.clone(),
                    port: u16::try_from(h.port).ok()?,
                })
            })
            .collect();
        let addresses: Vec<Option<IpAddr>> = hosts.iter().map(|h| h.host.parse().ok()).collect();
        let (discovery, endpoints) = if addresses.iter().all(Option::is_some) {
            let endpoints = hosts
                .iter()
                .zip(&addresses)
                .filter_map(|(h, ip)| Some(Endpoint::new(SocketAddr::new((*ip)?, h.port))))
                .collect();
            (Discovery::Static { hosts }, endpoints)
        } else {
            (Discovery::Dns { hosts }, Vec::new())
        };
        let name = backend_cluster_name(&key.namespace, &key.name);
        out.insert(
            name.clone(),
            ClusterDraft {
                cluster: Cluster {
                    name,
                    discovery,
                    endpoints,
                    protocol: crate::app_protocol::upstream_protocol(spec.app_protocol.as_deref()),
                    upstream: UpstreamPolicy::default(),
                },
                target: key.clone(),
            },
        );
        statuses.insert(key.clone(), accepted(&now));
    }
}

fn accepted(now: &str) -> Value {
    json_object([(
        "conditions",
        Value::Array(vec![condition(
            "Accepted",
            true,
            "Accepted",
            "Backend accepted",
            now,
        )]),
    )])
}

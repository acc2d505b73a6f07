//! How long one translation takes at the Kubernetes scale test's size (2,000 Services with
//! EndpointSlices and HTTPRoutes, 500 BackendConfigPolicies, one Gateway):
//! `cargo run --release -p translate --example scale [ROUNDS]`. For profiling the control plane
//! without an API server (`perf record -g target/release/examples/scale 200`).

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use translate::Resources;

const SERVICES: usize = 2000;
const POLICIES: usize = 500;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut yaml = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: http, namespace: kgateway-system}\n\
         spec:\n  gatewayClassName: kgateway\n  listeners:\n  - {name: http, protocol: HTTP, port: 8080, allowedRoutes: {namespaces: {from: All}}}\n",
    );
    for i in 0..SERVICES {
        write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: scale}}\n\
             spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc-{i}-1, namespace: scale, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [127.0.0.{}]}}]\nports: [{{name: http, port: 8080}}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route-{i}, namespace: scale}}\n\
             spec:\n  parentRefs: [{{name: http, namespace: kgateway-system}}]\n  hostnames: [svc-{i}.example.com]\n\
             \x20 rules: [{{backendRefs: [{{name: svc-{i}, port: 80}}]}}]\n",
            1 + i % 250
        )
        .unwrap();
    }
    for i in 0..POLICIES {
        write!(
            yaml,
            "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\n\
             metadata: {{name: policy-{i}, namespace: scale, creationTimestamp: '2026-01-01T00:00:00Z'}}\n\
             spec:\n  targetRefs: [{{group: '', kind: Service, name: svc-{i}}}]\n  tcpKeepalive: {{keepAliveProbes: 3, keepAliveTime: 30s}}\n"
        )
        .unwrap();
    }
    let objects = api::parse_manifests(&yaml, "scale").expect("valid manifests");
    let resources: Resources = objects.into_iter().map(|o| (o.key(), o.into())).collect();
    let mut times = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        let (snapshot, statuses) = translate::translate(&resources, round as u64, SystemTime::now());
        times.push(t.elapsed());
        assert_eq!(snapshot.clusters.len(), SERVICES);
        assert_eq!(statuses.len(), SERVICES + POLICIES + 1);
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let max = times.last().copied().unwrap_or(Duration::ZERO);
    println!(
        "{} objects, {rounds} translations: p50 {p50:?}, max {max:?}",
        resources.len()
    );
}

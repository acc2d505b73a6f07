//! What issue 15's resources cost the control plane: decoding and validating TLS Secrets, and a
//! translation with HTTPS listeners (each certificate checked), Backends, and BackendTLSPolicies
//! with a ConfigMap CA. `cargo run --release -p translate --example tls_scale [N]` (N of each,
//! default 500). The certificate is made with the openssl CLI.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use translate::Resources;

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let dir = std::env::temp_dir().join(format!("kgw-tls-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=scale.example.com",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(&dir)
        .output()
        .expect("openssl");
    assert!(status.status.success());
    let cert = std::fs::read_to_string(dir.join("cert.pem")).expect("cert");
    let key = std::fs::read_to_string(dir.join("key.pem")).expect("key");
    let _ = std::fs::remove_dir_all(&dir);

    let mut secrets = String::new();
    for i in 0..n {
        write!(
            secrets,
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cert-{i}, namespace: scale}}\ntype: kubernetes.io/tls\n\
             stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&cert),
            indent(&key)
        )
        .unwrap();
    }
    let t = Instant::now();
    let secret_objects = api::parse_manifests(&secrets, "secrets").expect("valid Secrets");
    let per_secret = t.elapsed() / n as u32;

    let mut yaml = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: https, namespace: scale}\n\
         spec:\n  gatewayClassName: kgateway\n  listeners:\n",
    );
    // Gateway API allows 64 listeners per Gateway: N listeners over N/64 Gateways.
    for i in 0..n {
        if i > 0 && i % 64 == 0 {
            write!(
                yaml,
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: https-{i}, namespace: scale}}\n\
                 spec:\n  gatewayClassName: kgateway\n  listeners:\n"
            )
            .unwrap();
        }
        writeln!(
            yaml,
            "  - {{name: l-{i}, protocol: HTTPS, port: 8443, hostname: h{i}.example.com, tls: {{certificateRefs: [{{name: cert-{i}}}]}}}}"
        )
        .unwrap();
    }
    write!(
        yaml,
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: scale}}\ndata:\n  ca.crt: |\n{}",
        indent(&cert)
    )
    .unwrap();
    for i in 0..n {
        write!(
            yaml,
            "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata: {{name: be-{i}, namespace: scale}}\n\
             spec: {{static: {{hosts: [{{host: 10.0.{}.{}, port: 443}}]}}}}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: tls-{i}, namespace: scale}}\n\
             spec:\n  targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: be-{i}}}]\n\
             \x20 validation: {{hostname: be-{i}.example.com, caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca}}]}}\n",
            i / 250,
            i % 250
        )
        .unwrap();
    }
    let objects = api::parse_manifests(&yaml, "scale").expect("valid manifests");
    let resources: Resources = objects
        .into_iter()
        .chain(secret_objects)
        .map(|o| (o.key(), o.into()))
        .collect();
    let rounds = 20;
    let mut times = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        let (snapshot, _) = translate::translate(&resources, round, SystemTime::now());
        times.push(t.elapsed());
        let tls = snapshot.listeners[0].tls.as_ref().expect("an HTTPS port");
        assert_eq!(tls.certificates.len(), n);
        assert_eq!(
            snapshot
                .clusters
                .iter()
                .filter(|c| c.upstream.tls.is_some())
                .count(),
            n
        );
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let max = times.last().copied().unwrap_or(Duration::ZERO);
    println!(
        "{n} TLS Secrets: {per_secret:?} each to decode and validate (PEM, X.509, key pair); \
         {} objects ({n} HTTPS listeners, {n} Backends, {n} BackendTLSPolicies), {rounds} translations: p50 {p50:?}, max {max:?}",
        resources.len()
    );
}

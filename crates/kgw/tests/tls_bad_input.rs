//! TLS material a user can get wrong: a certificate or key that does not parse, a key that is not
//! the certificate's, a CA bundle without a certificate, `tls` with two trust sources, TLS
//! parameters kgw's TLS library lacks. Each is refused at apply with the resource, the field and
//! the fix; the CLI exits non-zero; what was serving keeps serving.

mod common;

use common::pki::{Pki, secret_yaml};
use common::*;

fn policy_tls(tls: &str) -> String {
    format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: httpbin-tls\n  \
         namespace: httpbin\nspec:\n  targetRefs:\n    - name: httpbin\n      group: \"\"\n      kind: Service\n  \
         tls:\n{tls}"
    )
}

#[test]
fn bad_tls_material_is_refused_and_the_serving_config_stays() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let good = pki.leaf("good.example.com", &["good.example.com"]);
    let other = pki.leaf("other.example.com", &["other.example.com"]);
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let serving = secret_yaml("httpbin", "good", &good, Some(&pki.ca.cert));
    let out = gw.kgw(&["apply", "-f", "-"], &serving);
    assert!(out.status.success(), "a good Secret is taken: {}", stderr(&out));
    let before = gw.dump("GET", "?include_eds");
    let (status, _) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200, "the quickstart serves before the bad input");

    let mismatched = secret_yaml(
        "httpbin",
        "good",
        &common::pki::CertFiles {
            cert: good.cert.clone(),
            key: other.key.clone(),
        },
        None,
    );
    let garbage_cert = serving.replacen(
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN CERTIFICATE-----\n    !!!!",
        1,
    );
    let garbage_key = serving.replace("PRIVATE KEY-----\n    M", "PRIVATE KEY-----\n    !!!!M");
    let no_cert_ca = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ca\n  namespace: httpbin\ndata:\n  \
                      ca.crt: \"not a certificate\"\n";
    // (document, what it is, field path, words the message must hold)
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            mismatched,
            "Secret \"httpbin/good\"",
            "data[tls.key]",
            "does not belong to the certificate",
        ),
        (
            garbage_cert,
            "Secret \"httpbin/good\"",
            "data[tls.crt]",
            "does not parse as X.509",
        ),
        (
            garbage_key,
            "Secret \"httpbin/good\"",
            "data[tls.key]",
            "private key",
        ),
        (
            no_cert_ca.to_string(),
            "ConfigMap \"httpbin/ca\"",
            "data[ca.crt]",
            "no PEM certificate found",
        ),
        (
            policy_tls("    secretRef: {name: good}\n    files: {rootCA: /etc/ssl/ca.pem}\n"),
            "BackendConfigPolicy \"httpbin/httpbin-tls\"",
            "spec.tls",
            "",
        ),
        (
            policy_tls("    sni: a.example.com\n    parameters: {minVersion: \"1.0\"}\n"),
            "BackendConfigPolicy \"httpbin/httpbin-tls\"",
            "spec.tls.parameters.minVersion",
            "TLS 1.0 and 1.1 are not supported",
        ),
        (
            policy_tls("    sni: a.example.com\n    parameters: {cipherSuites: [RC4-SHA]}\n"),
            "BackendConfigPolicy \"httpbin/httpbin-tls\"",
            "spec.tls.parameters.cipherSuites[0]",
            "use one of ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        (
            policy_tls("    sni: a.example.com\n    parameters: {ecdhCurves: [X448]}\n"),
            "BackendConfigPolicy \"httpbin/httpbin-tls\"",
            "spec.tls.parameters.ecdhCurves[0]",
            "use one of X25519",
        ),
        (
            policy_tls("    sni: a.example.com\n    alpnProtocols: [h3, http/1.1]\n"),
            "BackendConfigPolicy \"httpbin/httpbin-tls\"",
            "spec.tls.alpnProtocols[0]",
            "kgw speaks HTTP/1.1 and HTTP/2 to backends",
        ),
        (
            policy_tls("    sni: 10.0.0.1\n"),
            "BackendConfigPolicy \"httpbin/httpbin-tls\"",
            "spec.tls.sni",
            "sni must be a DNS name",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: btp, namespace: httpbin}\n\
             spec:\n  targetRefs: [{group: \"\", kind: Service, name: httpbin, sectionName: https}]\n  \
             validation: {hostname: httpbin.example.com, wellKnownCACertificates: System}\n"
                .to_string(),
            "BackendTLSPolicy \"httpbin/btp\"",
            "spec.targetRefs[0].sectionName",
            "would reach every port",
        ),
        (
            policy_tls("    sni: a.example.com\n    allowRenegotiation: true\n"),
            "BackendConfigPolicy \"httpbin/httpbin-tls\"",
            "spec.tls.allowRenegotiation",
            "never renegotiates",
        ),
    ];
    for (doc, resource, field, words) in &cases {
        let out = gw.kgw(&["apply", "-f", "-"], doc);
        let err = stderr(&out);
        assert!(!out.status.success(), "accepted but should not be:\n{doc}");
        assert!(
            err.contains(&format!("{resource} is invalid")),
            "names the resource: {err}"
        );
        assert!(err.contains(field), "names the field {field}: {err}");
        assert!(err.contains(words), "says {words:?}: {err}");
    }
    // Nothing that was serving is lost: the same configuration, the same answers.
    assert_eq!(gw.dump("GET", "?include_eds")["configs"], before["configs"]);
    let (status, _) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200);
    // kubectl shows Secret data in base64.
    let encoded = std::process::Command::new("base64")
        .args(["-w0", &good.cert.to_string_lossy()])
        .output()
        .expect("base64");
    let encoded = String::from_utf8_lossy(&encoded.stdout).to_string();
    let out = gw.kgw(&["get", "secret", "good", "-n", "httpbin", "-o", "yaml"], "");
    assert!(
        out.status.success() && stdout(&out).contains(&encoded),
        "the good Secret is the one kept: {}",
        stdout(&out)
    );
}

//! TLS material a user can get wrong: a CA bundle without a certificate, `tls` with two trust
//! sources, TLS parameters kgw's TLS library lacks: each is refused at apply with the resource,
//! the field and the fix; the CLI exits non-zero; what was serving keeps serving. A Secret's
//! certificate or key that does not parse, or a key that is not the certificate's, is taken (as
//! the API server takes it) and the listener that uses it says why it is not served.

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
    // A kubernetes.io/tls Secret whose pair is unusable is taken, as the API server takes it
    // (Gateway API's conformance applies one); an HTTPS listener that uses it is not
    // programmed, and its status names the Secret, the key and the fix.
    let https_port = free_port();
    for (doc, field, words) in [
        (&mismatched, "tls.key", "does not belong to the certificate"),
        (&garbage_cert, "tls.crt", "does not parse as X.509"),
        (&garbage_key, "tls.key", "private key"),
    ] {
        let doc = doc.replace("name: good", "name: bad");
        let out = gw.kgw(&["apply", "-f", "-"], &doc);
        assert!(
            out.status.success(),
            "taken as the API server takes it: {}",
            stderr(&out)
        );
        let gateway = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: tls, namespace: httpbin}}\n\
             spec:\n  gatewayClassName: kgateway\n  listeners:\n  - name: https\n    port: {https_port}\n    \
             protocol: HTTPS\n    tls: {{certificateRefs: [{{name: bad}}]}}\n"
        );
        let out = gw.kgw(&["apply", "-f", "-"], &gateway);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = gw.kgw(&["get", "gateway", "tls", "-n", "httpbin", "-o", "json"], "");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kgw get -o json");
        let conditions = v["status"]["listeners"][0]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let resolved = conditions
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .unwrap_or_else(|| panic!("no ResolvedRefs in {v}"));
        assert_eq!(resolved["status"], "False", "{resolved}");
        assert_eq!(resolved["reason"], "InvalidCertificateRef", "{resolved}");
        let message = resolved["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("Secret httpbin/bad") && message.contains(field) && message.contains(words),
            "names the Secret, {field} and says {words:?}: {message}"
        );
        let out = gw.kgw(&["delete", "gateway", "tls", "-n", "httpbin"], "");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = gw.kgw(&["delete", "secret", "bad", "-n", "httpbin"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        gw.curl("www.example.com", "/get").0,
        200,
        "what was serving still serves"
    );
    // What follows is refused: the configuration from here on must not change.
    let before = gw.dump("GET", "?include_eds");
    // (document, what it is, field path, words the message must hold)
    let cases: Vec<(String, &str, &str, &str)> = vec![
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

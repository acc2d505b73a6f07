//! `kgw patch`, kubectl's patch against a running gateway: JSON patch and merge patch, and a
//! clear refusal of what it cannot do (the object stays as it was).

mod common;

use common::*;

#[test]
fn kgw_patch_refuses_what_it_cannot_do_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let patch = |args: &[&str]| gw.kgw(&[&["patch"][..], args].concat(), "");

    let out = patch(&["service", "httpbin", "-n", "httpbin", "-p", "{}"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--type strategic is not supported: use --type json"),
        "{}",
        stderr(&out)
    );

    let out = patch(&["service", "nope", "-n", "httpbin", "--type", "json", "-p", "[]"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"nope\" not found"), "{}", stderr(&out));

    let out = patch(&[
        "service",
        "httpbin",
        "-n",
        "httpbin",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/nope"}]"#,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not apply to service/httpbin"),
        "{}",
        stderr(&out)
    );

    // A patch that makes the object invalid is refused by the gateway, and the object stays.
    let out = patch(&[
        "service",
        "httpbin",
        "-n",
        "httpbin",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"ports":[{"port":"eighty"}]}}"#,
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("spec.ports"), "{}", stderr(&out));
    let (status, _) = gw.curl("www.example.com", "/headers");
    assert_eq!(status, 200, "still serving");

    // A merge patch that works.
    let out = patch(&[
        "service",
        "httpbin",
        "-n",
        "httpbin",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"demo"}}}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = gw.kgw(&["get", "service", "httpbin", "-n", "httpbin", "-o", "json"], "");
    let service: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(service["metadata"]["labels"]["tier"], "demo");
    assert_eq!(
        service["metadata"]["labels"]["app"], "httpbin",
        "other labels kept"
    );
}

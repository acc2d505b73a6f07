//! HTTPRoute matching and rule policies through the real kgw with real clients (curl over
//! HTTP/1.1 and HTTP/2): query parameter and method matches with Gateway API precedence, named
//! rules, timeouts, request mirrors and CORS. The backends are `route_policies/echo.rs`.

mod common;
#[path = "route_policies/echo.rs"]
mod echo;

use std::process::Command;
use std::time::Duration;

use common::curl_reply::CurlReply as Reply;
use common::*;
use echo::Echo;

const NS: &str = "policies";

/// A Gateway on `port` in NS, then `routes` (HTTPRoutes in NS whose parentRef is `gw`).
fn gateway_yaml(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n---\n"
    )
}

/// Request headers a case sends.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The echo backend that answered, if one did.
trait AnsweredBy {
    fn backend(&self) -> Option<String>;
}

impl AnsweredBy for Reply {
    fn backend(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["backend"].as_str().map(str::to_string)
    }
}

/// One request with curl (`h2`: HTTP/2 with prior knowledge).
fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)], h2: bool) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-D", "-", "-o", "-", "-X", method]);
    if method == "HEAD" {
        cmd.arg("--head");
    }
    if h2 {
        cmd.arg("--http2-prior-knowledge");
    }
    for (name, value) in headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("curl is installed");
    Reply::parse(&out.stdout)
}

/// Starts kgw with the echo backends and `routes` applied, once the first request in `ready`
/// routes as it should.
fn start(dir: &std::path::Path, echo: &Echo, routes: &str) -> Gateway {
    let port = free_port();
    let gw = GatewayBuilder::run(dir, port).start();
    gw.apply(&format!("{}{}{routes}", gateway_yaml(port), echo.services(NS)));
    gw
}

/// Waits until a request gets any answer but 404 (the route is served).
fn wait_routed(gw: &Gateway, path: &str) {
    wait_for(&format!("{path} is routed"), Duration::from_secs(10), || {
        (send(gw.port, "GET", path, &[], false).status != 404).then_some(())
    });
}

/// The conformance test's HTTPRoute (HTTPRouteQueryParamMatching), in NS.
const QUERY_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: query-param-matching
  namespace: policies
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - queryParams:
      - name: animal
        value: whale
    backendRefs:
    - name: v1
      port: 8080
  - matches:
    - queryParams:
      - name: animal
        value: dolphin
    backendRefs:
    - name: v2
      port: 8080
  - matches:
    - queryParams:
      - name: animal
        value: dolphin
      - name: color
        value: blue
    - queryParams:
      - name: ANIMAL
        value: Whale
    backendRefs:
    - name: v3
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /path1
      queryParams:
      - name: animal
        value: whale
    backendRefs:
    - name: v1
      port: 8080
  - matches:
    - headers:
      - name: version
        value: one
      queryParams:
      - name: animal
        value: whale
    backendRefs:
    - name: v2
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /path5
    backendRefs:
    - name: v1
      port: 8080
  - matches:
    - queryParams:
      - name: animal
        value: hydra
    backendRefs:
    - name: v2
      port: 8080
  - matches:
    - headers:
      - name: version
        value: four
    backendRefs:
    - name: v3
      port: 8080
"#;

#[test]
fn query_params_route_by_exact_value_with_gateway_api_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start(&["v1", "v2", "v3"]);
    let gw = start(dir.path(), &echo, QUERY_ROUTE);
    wait_routed(&gw, "/?animal=whale");
    let cases: &[(&str, Headers, Option<&str>)] = &[
        ("/?animal=whale", &[], Some("v1")),
        ("/?animal=dolphin", &[], Some("v2")),
        // More query matches first: the two-parameter rule wins over `animal=dolphin` alone.
        ("/?animal=dolphin&color=blue", &[], Some("v3")),
        ("/?ANIMAL=Whale", &[], Some("v3")),
        ("/?animal=whale&otherparam=irrelevant", &[], Some("v1")),
        ("/?animal=dolphin&color=yellow", &[], Some("v2")),
        // Percent-decoded before comparing, as Envoy does.
        ("/?anim%61l=wh%61le", &[], Some("v1")),
        ("/?color=blue", &[], None),
        ("/?animal=dog", &[], None),
        ("/?animal=whaledolphin", &[], None),
        ("/", &[], None),
        ("/path1?animal=whale", &[], Some("v1")),
        // A header match outranks a query match.
        ("/?animal=whale", &[("version", "one")], Some("v2")),
        ("/path5?animal=hydra", &[], Some("v1")),
        ("/?animal=hydra", &[("version", "four")], Some("v3")),
    ];
    for h2 in [false, true] {
        for (path, headers, want) in cases {
            let reply = send(gw.port, "GET", path, headers, h2);
            match want {
                Some(backend) => {
                    assert_eq!(reply.status, 200, "{path} {headers:?} (h2: {h2}): {}", reply.body);
                    assert_eq!(
                        reply.backend().as_deref(),
                        Some(*backend),
                        "{path} {headers:?} (h2: {h2})"
                    );
                    assert_eq!(reply.header("content-type"), Some("application/json"));
                    let echoed: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                    assert_eq!(echoed["path"], *path, "the query goes upstream as it came");
                }
                None => assert_eq!(reply.status, 404, "{path} {headers:?} (h2: {h2}): {}", reply.body),
            }
        }
    }
    let dump = gw.dump("GET", "");
    let text = dump.to_string();
    assert!(
        text.contains(r#""query_parameters":[{"name":"animal","string_match":{"exact":"dolphin"}},{"name":"color","string_match":{"exact":"blue"}}]"#),
        "the dump shows the query matches: {text}"
    );
}

/// The conformance test's HTTPRoutes for HTTPRouteMethodMatching and HTTPRouteNamedRule.
const METHOD_AND_NAMED_ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: method-matching
  namespace: policies
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - method: POST
    backendRefs:
    - name: v1
      port: 8080
  - matches:
    - method: GET
    backendRefs:
    - name: v2
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /path5
    backendRefs:
    - name: v1
      port: 8080
  - matches:
    - method: PATCH
    backendRefs:
    - name: v2
      port: 8080
  - matches:
    - headers:
      - name: version
        value: four
    backendRefs:
    - name: v3
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: http-named-rules
  namespace: policies
spec:
  parentRefs:
  - name: gw
  rules:
  - name: named-rule
    matches:
    - path:
        type: PathPrefix
        value: /named
    backendRefs:
    - name: v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /unnamed
    backendRefs:
    - name: v2
      port: 8080
"#;

#[test]
fn methods_route_with_precedence_and_named_rules_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start(&["v1", "v2", "v3"]);
    let gw = start(dir.path(), &echo, METHOD_AND_NAMED_ROUTES);
    wait_routed(&gw, "/named");
    let cases: &[(&str, &str, Headers, Option<&str>)] = &[
        ("POST", "/", &[], Some("v1")),
        ("GET", "/", &[], Some("v2")),
        ("HEAD", "/", &[], None),
        ("PUT", "/", &[], None),
        // The longer path first, then a method match before a header match.
        ("PATCH", "/path5", &[], Some("v1")),
        ("PATCH", "/", &[("version", "four")], Some("v2")),
        ("PUT", "/", &[("version", "four")], Some("v3")),
        ("GET", "/named", &[], Some("v1")),
        ("GET", "/unnamed", &[], Some("v2")),
    ];
    for h2 in [false, true] {
        for (method, path, headers, want) in cases {
            let reply = send(gw.port, method, path, headers, h2);
            match want {
                Some(backend) => {
                    assert_eq!(reply.status, 200, "{method} {path} (h2: {h2}): {}", reply.body);
                    assert_eq!(
                        reply.backend().as_deref(),
                        Some(*backend),
                        "{method} {path} (h2: {h2})"
                    );
                }
                None => assert_eq!(reply.status, 404, "{method} {path} (h2: {h2})"),
            }
        }
    }
}

/// The conformance tests' HTTPRoutes (HTTPRouteRequestTimeout, HTTPRouteBackendTimeout), with a
/// rule that sets no timeout beside them.
const TIMEOUT_ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: timeouts
  namespace: policies
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - path: {type: PathPrefix, value: /request-timeout}
    backendRefs:
    - {name: v1, port: 8080}
    timeouts:
      request: 500ms
  - matches:
    - path: {type: PathPrefix, value: /disable-request-timeout}
    backendRefs:
    - {name: v1, port: 8080}
    timeouts:
      request: "0s"
  - matches:
    - path: {type: PathPrefix, value: /backend-timeout}
    backendRefs:
    - {name: v1, port: 8080}
    timeouts:
      backendRequest: 500ms
  - matches:
    - path: {type: PathPrefix, value: /disable-backend-timeout}
    backendRefs:
    - {name: v1, port: 8080}
    timeouts:
      backendRequest: "0s"
  - matches:
    - path: {type: PathPrefix, value: /default}
    backendRefs:
    - {name: v1, port: 8080}
"#;

#[test]
fn rule_timeouts_answer_504_when_the_backend_is_slower_and_0s_turns_them_off() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start(&["v1"]);
    // A default route timeout shorter than the slow backend: `0s` must lift it, not fall back.
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("--route-timeout")
        .arg("700ms")
        .start();
    gw.apply(&format!(
        "{}{}{TIMEOUT_ROUTES}",
        gateway_yaml(port),
        echo.services(NS)
    ));
    wait_routed(&gw, "/default");
    for h2 in [false, true] {
        for prefix in ["/request-timeout", "/backend-timeout"] {
            let fast = send(gw.port, "GET", prefix, &[], h2);
            assert_eq!(fast.status, 200, "{prefix} (h2: {h2}): {}", fast.body);
            let started = std::time::Instant::now();
            let slow = send(gw.port, "GET", &format!("{prefix}?delay=1s"), &[], h2);
            assert_eq!(slow.status, 504, "{prefix}?delay=1s (h2: {h2}): {}", slow.body);
            assert_eq!(slow.body, "upstream request timeout");
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(450) && waited < Duration::from_millis(950),
                "{prefix}: answered after {waited:?}, not at the rule's 500ms"
            );
        }
        for prefix in ["/disable-request-timeout", "/disable-backend-timeout"] {
            let slow = send(gw.port, "GET", &format!("{prefix}?delay=1s"), &[], h2);
            assert_eq!(slow.status, 200, "{prefix}?delay=1s (h2: {h2}): {}", slow.body);
            assert_eq!(slow.backend().as_deref(), Some("v1"));
        }
        // No rule timeout: the proxy's default (700ms here) still applies.
        let slow = send(gw.port, "GET", "/default?delay=1s", &[], h2);
        assert_eq!(slow.status, 504, "/default?delay=1s (h2: {h2})");
    }
    let text = gw.dump("GET", "").to_string();
    assert!(
        text.contains(r#""timeout":"0.500s""#),
        "the dump shows the rule's timeout: {text}"
    );
    assert!(
        text.contains(r#""timeout":"0s""#),
        "the dump shows the timeout turned off: {text}"
    );
}

/// The conformance tests' mirrors (HTTPRouteRequestMirror, ...MultipleMirrors,
/// ...PercentageMirror).
const MIRROR_ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mirrors
  namespace: policies
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - path: {type: PathPrefix, value: /mirror}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: v2, namespace: policies, port: 8080}
    backendRefs:
    - {name: v1, port: 8080}
  - matches:
    - path: {type: PathPrefix, value: /multi-mirror}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: v2, port: 8080}
    - type: RequestMirror
      requestMirror:
        backendRef: {name: v3, port: 8080}
    backendRefs:
    - {name: v1, port: 8080}
  - matches:
    - path: {type: PathPrefix, value: /half}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: v3, port: 8080}
        fraction: {numerator: 1, denominator: 2}
    backendRefs:
    - {name: v1, port: 8080}
  - matches:
    - path: {type: PathPrefix, value: /never}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: v3, port: 8080}
        percent: 0
    backendRefs:
    - {name: v1, port: 8080}
"#;

#[test]
fn mirrors_get_a_copy_with_a_shadow_host_and_the_client_gets_the_backend_answer() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start(&["v1", "v2", "v3"]);
    let gw = start(dir.path(), &echo, MIRROR_ROUTES);
    wait_routed(&gw, "/never");
    for (h2, tag) in [(false, "h1"), (true, "h2")] {
        let reply = send(gw.port, "GET", &format!("/mirror?{tag}"), &[], h2);
        assert_eq!(
            reply.backend().as_deref(),
            Some("v1"),
            "the client gets the route's backend"
        );
        let shadow = format!("v2 GET /mirror?{tag} 127.0.0.1-shadow:{}", gw.port);
        echo.wait_seen(&format!("{shadow} (h2: {h2})"), 1, |l| l == shadow);
        let reply = send(gw.port, "POST", &format!("/multi-mirror?{tag}"), &[], h2);
        assert_eq!(reply.backend().as_deref(), Some("v1"));
        for name in ["v2", "v3"] {
            let line = format!("{name} POST /multi-mirror?{tag} 127.0.0.1-shadow:{}", gw.port);
            echo.wait_seen(&line, 1, |l| l == line);
        }
    }
    // Half the requests, drawn one by one; none at percent 0.
    for i in 0..100 {
        assert_eq!(
            send(gw.port, "GET", &format!("/half?n={i}"), &[], false).status,
            200
        );
        assert_eq!(
            send(gw.port, "GET", &format!("/never?n={i}"), &[], false).status,
            200
        );
    }
    echo.wait_seen("half the /half requests mirrored", 25, |l| {
        l.starts_with("v3 GET /half")
    });
    // A last mirrored request marks the end of the copies sent before it.
    send(gw.port, "GET", "/mirror?last", &[], false);
    let seen = echo.wait_seen("the last mirror", 1, |l| l.starts_with("v2 GET /mirror?last"));
    let half = seen.iter().filter(|l| l.starts_with("v3 GET /half")).count();
    assert!((25..=75).contains(&half), "{half} of 100 mirrored at 1/2");
    assert!(
        !seen.iter().any(|l| l.starts_with("v3 GET /never")),
        "percent: 0 mirrors nothing"
    );
    let text = gw.dump("GET", "").to_string();
    assert!(
        text.contains(r#""request_mirror_policies":[{"cluster":"kube_policies_v3_8080","runtime_fraction":{"default_value":{"numerator":500000,"denominator":"MILLION"}}}]"#),
        "the dump shows the mirrors: {text}"
    );
}

/// The conformance test's first CORS route (HTTPRouteCORS).
const CORS_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: cors
  namespace: policies
spec:
  parentRefs:
  - name: gw
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    matches:
    - path: {type: PathPrefix, value: /cors-1}
    backendRefs:
    - {name: v1, port: 8080}
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["*"]
        allowMethods: ["*"]
        allowHeaders: ["*"]
    matches:
    - path: {type: PathPrefix, value: /any}
    backendRefs:
    - {name: v1, port: 8080}
"#;

#[test]
fn cors_preflights_are_answered_by_the_gateway_and_responses_name_the_allowed_origin() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start(&["v1"]);
    let gw = start(dir.path(), &echo, CORS_ROUTE);
    wait_routed(&gw, "/cors-1");
    for h2 in [false, true] {
        let ask = |origin: &str| {
            send(
                gw.port,
                "OPTIONS",
                "/cors-1",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-header-1"),
                ],
                h2,
            )
        };
        for origin in ["https://www.foo.com", "https://xpto.www.bar.com"] {
            let reply = ask(origin);
            assert_eq!(reply.status, 200, "{origin} (h2: {h2})");
            assert_eq!(reply.backend(), None, "the gateway answers the preflight");
            assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
            assert_eq!(reply.header("access-control-allow-methods"), Some("GET, OPTIONS"));
            assert_eq!(
                reply.header("access-control-allow-headers"),
                Some("x-header-1, x-header-2")
            );
            assert_eq!(
                reply.header("access-control-expose-headers"),
                Some("x-header-3, x-header-4")
            );
            assert_eq!(reply.header("access-control-max-age"), Some("3600"));
            assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
        }
        let refused = ask("https://foobar.com");
        assert_eq!(refused.status, 200);
        assert_eq!(
            refused.backend(),
            None,
            "a refused preflight is not forwarded either"
        );
        assert_eq!(refused.header("access-control-allow-origin"), None);

        let actual = send(
            gw.port,
            "GET",
            "/cors-1",
            &[("origin", "https://www.bar.com")],
            h2,
        );
        assert_eq!(actual.backend().as_deref(), Some("v1"));
        assert_eq!(
            actual.header("access-control-allow-origin"),
            Some("https://www.bar.com")
        );
        assert_eq!(actual.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            actual.header("access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        let other = send(gw.port, "GET", "/cors-1", &[("origin", "https://foobar.com")], h2);
        assert_eq!(other.backend().as_deref(), Some("v1"));
        assert_eq!(other.header("access-control-allow-origin"), None);
        assert_eq!(other.header("access-control-allow-credentials"), None);

        // `*` methods and headers answer what is asked; without credentials none are claimed.
        let any = send(
            gw.port,
            "OPTIONS",
            "/any",
            &[
                ("origin", "https://foobar.com:12345"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-a, x-b"),
            ],
            h2,
        );
        assert_eq!(
            any.header("access-control-allow-origin"),
            Some("https://foobar.com:12345")
        );
        assert_eq!(any.header("access-control-allow-methods"), Some("PUT"));
        assert_eq!(any.header("access-control-allow-headers"), Some("x-a, x-b"));
        assert_eq!(any.header("access-control-allow-credentials"), None);
    }
    assert!(
        !echo.seen().iter().any(|l| l.starts_with("v1 OPTIONS")),
        "no preflight reached the backend: {:?}",
        echo.seen()
    );
    let text = gw.dump("GET", "").to_string();
    assert!(text.contains(r#""name":"envoy.filters.http.cors""#), "{text}");
    assert!(
        text.contains(r#""forward_not_matching_preflights":false"#),
        "{text}"
    );
}

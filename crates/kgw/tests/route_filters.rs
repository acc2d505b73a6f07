//! HTTPRoute filters through the real kgw, with curl over HTTP/1.1 and HTTP/2 (h2c prior
//! knowledge), to an HTTP/1.1 backend (a python echo server that shows every header line as it
//! came, and answers with the response headers `x-echo-set-header` asks for) and to an HTTP/2
//! one (the sample backend on an `appProtocol: kubernetes.io/h2c` port): RequestHeaderModifier
//! (rule and backendRef), ResponseHeaderModifier, RequestRedirect, URLRewrite.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::curl_reply::CurlReply as Reply;
use common::*;
use serde_json::Value;

const NS: &str = "filters";

/// Echoes `{"path", "host", "headers": [[name, value], ...]}` (the request's header lines in
/// order, names as sent); `x-echo-set-header: name:value[,name:value]` adds response headers.
const ECHO: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"path": self.path, "host": self.headers.get("host"),
                           "headers": [[k, v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-backend-sent", "yes")
        for item in ",".join(self.headers.get_all("x-echo-set-header") or []).split(","):
            if ":" in item:
                name, value = item.split(":", 1)
                self.send_header(name.strip(), value.strip())
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo)
print("ready", flush=True)
server.serve_forever()
"#;

struct Backends {
    _echo: Proc,
    _h2: Proc,
    echo_port: u16,
    h2_port: u16,
}

fn backends(dir: &Path) -> Backends {
    let echo_port = free_port();
    let log = dir.join("echo.log");
    let child = Command::new("python3")
        .args(["-c", ECHO, &echo_port.to_string()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let echo = Proc { child, log };
    wait_for("the echo backend", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", echo_port)).ok()
    });
    let h2_port = free_port();
    let h2 = sample_backend_on(h2_port, dir.join("h2.log"));
    Backends {
        _echo: echo,
        _h2: h2,
        echo_port,
        h2_port,
    }
}

fn service(name: &str, backend: u16, app_protocol: Option<&str>) -> String {
    let app = app_protocol.map_or(String::new(), |a| format!("\n    appProtocol: {a}"));
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  ports:\n  - name: http\n    \
         port: 80{app}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
         namespace: {NS}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nendpoints:\n- addresses: \
         [\"127.0.0.1\"]\nports:\n- name: http\n  port: {backend}\n---\n"
    )
}

/// The set/add/remove edits the header modifier tests check, on either modifier.
const SET_ADD_REMOVE: &str = "{set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, \
                              value: add-appends-values}], remove: [X-Header-Remove]}";

/// One HTTPRoute filter: `kind` and its field (`kind` with a lower-case first word) set to
/// `value`, a YAML flow mapping.
fn filter(kind: &str, value: &str) -> String {
    let field = match kind {
        "URLRewrite" => "urlRewrite".to_string(),
        _ => kind[..1].to_ascii_lowercase() + &kind[1..],
    };
    format!("\n    - type: {kind}\n      {field}: {value}")
}

/// A rule under the path prefix `prefix` with `filters` (from [`filter`]) and `backend_refs`,
/// a YAML flow list (none when empty).
fn rule(prefix: &str, filters: &[String], backend_refs: &str) -> String {
    let backends = if backend_refs.is_empty() {
        String::new()
    } else {
        format!("\n    backendRefs: {backend_refs}")
    };
    format!(
        "\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:{}{backends}",
        filters.concat()
    )
}

/// The rules under test, each under its own path prefix.
fn rules() -> String {
    let echo = "[{name: echo, port: 80}]";
    let h2 = "[{name: h2, port: 80}]";
    let redirect = |prefix: &str, value: &str| rule(prefix, &[filter("RequestRedirect", value)], "");
    let rewrite = |prefix: &str, value: &str, to: &str| rule(prefix, &[filter("URLRewrite", value)], to);
    let local_edit = |value: &str| {
        filter(
            "ResponseHeaderModifier",
            &format!("{{set: [{{name: X-Local, value: {value}}}]}}"),
        )
    };
    [
        rule("/set", &[filter("RequestHeaderModifier", SET_ADD_REMOVE)], echo),
        rule("/anything/set", &[filter("RequestHeaderModifier", SET_ADD_REMOVE)], h2),
        redirect("/hostname-redirect", "{hostname: example.org}"),
        redirect("/host-and-status", "{hostname: example.org, statusCode: 301}"),
        redirect("/scheme", "{scheme: https, statusCode: 303}"),
        redirect("/port", "{port: 8083, statusCode: 307}"),
        redirect(
            "/scheme-port-443",
            "{scheme: https, port: 443, hostname: example.org, statusCode: 308}",
        ),
        redirect(
            "/original-prefix",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        ),
        redirect(
            "/full-redirect",
            "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}",
        ),
        rule("/resp", &[filter("ResponseHeaderModifier", SET_ADD_REMOVE)], echo),
        rule(
            "/anything/resp",
            &[filter(
                "ResponseHeaderModifier",
                "{set: [{name: X-Header-Set, value: set-overwrites-values}], remove: [Content-Type]}",
            )],
            h2,
        ),
        rule("/response-headers", &[filter("ResponseHeaderModifier", SET_ADD_REMOVE)], h2),
        rule(
            "/redirect-edited",
            &[filter("RequestRedirect", "{hostname: example.org}"), local_edit("redirect")],
            "",
        ),
        rule("/no-backend", &[local_edit("direct")], "[{name: missing, port: 80}]"),
        rule(
            "/half-missing",
            &[local_edit("share")],
            "[{name: echo, port: 80}, {name: missing, port: 80}]",
        ),
        // Each backendRef with its own filters.
        "\n  - matches: [{path: {type: PathPrefix, value: /backend-headers}}]\n    backendRefs:\n    - name: echo\n      \
         port: 80\n      filters:\n      - type: RequestHeaderModifier\n        requestHeaderModifier: {set: [{name: \
         X-Backend, value: echo}]}\n      - type: ResponseHeaderModifier\n        responseHeaderModifier: {add: [{name: \
         X-Picked, value: echo}]}\n    - name: echo-b\n      port: 80\n      filters:\n      - type: \
         RequestHeaderModifier\n        requestHeaderModifier: {set: [{name: X-Backend, value: echo-b}]}\n      - type: \
         ResponseHeaderModifier\n        responseHeaderModifier: {add: [{name: X-Picked, value: echo-b}]}"
            .to_string(),
        rewrite(
            "/prefix/one",
            "{hostname: one.example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}",
            echo,
        ),
        rewrite(
            "/strip-prefix",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}",
            echo,
        ),
        rewrite("/full/one", "{path: {type: ReplaceFullPath, replaceFullPath: /one}}", echo),
        rewrite(
            "/anything/rewrite",
            "{hostname: rewritten.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /anything}}",
            h2,
        ),
    ]
    .concat()
        + "\n"
}

fn gateway_yaml(port: u16, b: &Backends) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n---\n{}{}\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: filters\n  namespace: {NS}\nspec:\n  \
         parentRefs: [{{name: gw}}]\n  rules:{}",
        service("echo", b.echo_port, None) + &service("echo-b", b.echo_port, None),
        service("h2", b.h2_port, Some("kubernetes.io/h2c")),
        rules(),
    )
}

fn start(dir: &Path) -> (Gateway, Backends) {
    let b = backends(dir);
    let gw = GatewayBuilder::run(dir, free_port()).start();
    gw.apply(&gateway_yaml(gw.port, &b));
    wait_for("the routes", Duration::from_secs(10), || {
        (curl_with(&gw, "--http1.1", "/set", &[]).status == 200).then_some(())
    });
    (gw, b)
}

/// The echo backend's answer, parsed.
trait EchoJson {
    fn json(&self) -> Value;
}

impl EchoJson for Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// curl through the gateway with `version` (`--http1.1` or `--http2-prior-knowledge`).
fn curl_with(gw: &Gateway, version: &str, path: &str, headers: &[&str]) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-D", "-", version]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{}{path}", gw.port))
        .output()
        .expect("curl is installed");
    Reply::parse(&out.stdout)
}

const VERSIONS: [&str; 2] = ["--http1.1", "--http2-prior-knowledge"];

/// The echo backend's header lines named `name` (any case), values in order.
fn echoed(reply: &Reply, name: &str) -> Vec<String> {
    reply.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn request_header_modifier_sets_adds_and_removes_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    for version in VERSIONS {
        // To the HTTP/1.1 backend: every line as it arrived.
        let r = curl_with(
            &gw,
            version,
            "/set?q=1",
            &[
                "x-header-set: some-other-value",
                "X-Header-Add: some-other-value",
                "X-HEADER-REMOVE: val",
                "some-other-header: val",
            ],
        );
        assert_eq!(r.status, 200, "{version}: {}", r.body);
        assert_eq!(r.json()["path"], "/set?q=1", "{version}");
        assert_eq!(echoed(&r, "x-header-set"), ["set-overwrites-values"], "{version}");
        assert_eq!(
            echoed(&r, "x-header-add"),
            ["some-other-value", "add-appends-values"],
            "{version}"
        );
        assert!(echoed(&r, "x-header-remove").is_empty(), "{version}");
        assert_eq!(echoed(&r, "some-other-header"), ["val"], "{version}");
        // To the HTTP/2 backend (the sample backend joins the values of one name with `,`).
        let r = curl_with(
            &gw,
            version,
            "/anything/set",
            &[
                "x-header-set: some-other-value",
                "X-Header-Add: orig",
                "X-Header-Remove: val",
            ],
        );
        assert_eq!(r.status, 200, "{version}: {}", r.body);
        let headers = &r.json()["headers"];
        assert_eq!(headers["X-Header-Set"], "set-overwrites-values", "{version}");
        assert_eq!(headers["X-Header-Add"], "orig,add-appends-values", "{version}");
        assert!(headers.get("X-Header-Remove").is_none(), "{version}: {headers}");
    }
}

#[test]
fn request_redirect_answers_with_the_location_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    for version in VERSIONS {
        let r = curl_with(&gw, version, "/hostname-redirect/a?q=1", &[]);
        assert_eq!(r.status, 302, "{version}");
        // The listener's port, as no scheme and no port are given.
        assert_eq!(
            r.header("location"),
            Some(format!("http://example.org:{}/hostname-redirect/a?q=1", gw.port).as_str()),
            "{version}"
        );
        assert_eq!(r.header("content-length"), Some("0"), "{version}");
        assert_eq!(r.body, "", "{version}");
        let r = curl_with(&gw, version, "/host-and-status", &[]);
        assert_eq!(r.status, 301, "{version}");
        assert_eq!(
            r.header("location"),
            Some(format!("http://example.org:{}/host-and-status", gw.port).as_str()),
            "{version}"
        );
    }
    // The dump says the same.
    let dump = gw.dump("GET", "");
    let routes = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c.get("dynamic_route_configs"))
        .unwrap()[0]["route_config"]["virtual_hosts"][0]["routes"]
        .clone();
    let redirect = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["match"]["path_separated_prefix"] == "/host-and-status")
        .unwrap()["redirect"]
        .clone();
    assert_eq!(
        redirect,
        serde_json::json!({"host_redirect": "example.org", "port_redirect": gw.port})
    );
}

#[test]
fn request_redirect_builds_scheme_port_and_path_as_gateway_api_says() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    let port = gw.port;
    let cases: [(&str, u16, String); 6] = [
        // A scheme and no port: the scheme's port; shown, as Envoy shows a port_redirect (the
        // request's Host, 127.0.0.1:PORT, would otherwise keep its port); Gateway API takes it.
        ("/scheme/a?q=1", 303, "https://127.0.0.1:443/scheme/a?q=1".into()),
        // A port and no scheme: the request's scheme.
        ("/port", 307, "http://127.0.0.1:8083/port".into()),
        // The scheme's default port is left out.
        (
            "/scheme-port-443",
            308,
            "https://example.org/scheme-port-443".into(),
        ),
        (
            "/original-prefix/lemon",
            302,
            format!("http://127.0.0.1:{port}/replacement-prefix/lemon"),
        ),
        (
            "/original-prefix",
            302,
            format!("http://127.0.0.1:{port}/replacement-prefix"),
        ),
        (
            "/full-redirect/x",
            302,
            format!("http://127.0.0.1:{port}/full-path-replacement"),
        ),
    ];
    for version in VERSIONS {
        for (path, status, location) in &cases {
            let r = curl_with(&gw, version, path, &[]);
            assert_eq!(
                (r.status, r.header("location")),
                (*status, Some(location.as_str())),
                "{version} {path}"
            );
        }
    }
}

#[test]
fn response_header_modifier_edits_the_response_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    for version in VERSIONS {
        let r = curl_with(
            &gw,
            version,
            "/resp",
            &["x-echo-set-header: X-Header-Set:orig,X-Header-Add:orig,X-Header-Remove:gone"],
        );
        assert_eq!(r.status, 200, "{version}");
        assert_eq!(r.all("x-header-set"), ["set-overwrites-values"], "{version}");
        assert_eq!(r.all("x-header-add"), ["orig", "add-appends-values"], "{version}");
        assert!(r.all("x-header-remove").is_empty(), "{version}");
        assert_eq!(r.all("x-backend-sent"), ["yes"], "{version}");
        // From the HTTP/2 backend.
        let r = curl_with(&gw, version, "/anything/resp", &[]);
        assert_eq!(r.status, 200, "{version}");
        assert_eq!(
            r.header("x-header-set"),
            Some("set-overwrites-values"),
            "{version}"
        );
        assert_eq!(r.header("content-type"), None, "{version}");
        assert!(
            r.body.contains("\"url\""),
            "{version}: the body still comes: {}",
            r.body
        );
        // From the HTTP/2 backend, which sends each of these once.
        let r = curl_with(
            &gw,
            version,
            "/response-headers?X-Header-Set=orig&X-Header-Add=orig&X-Header-Remove=gone",
            &[],
        );
        assert_eq!(r.status, 200, "{version}: {}", r.body);
        assert_eq!(r.all("x-header-set"), ["set-overwrites-values"], "{version}");
        assert_eq!(r.all("x-header-add"), ["orig", "add-appends-values"], "{version}");
        assert!(r.all("x-header-remove").is_empty(), "{version}: {:?}", r.headers);
    }
}

#[test]
fn response_header_modifier_edits_the_routes_local_replies_too() {
    // As Envoy applies response_headers_to_add to a redirect, a direct_response and the 500 of a
    // cluster not found (checked with Envoy 1.40).
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    for version in VERSIONS {
        let r = curl_with(&gw, version, "/redirect-edited/a", &[]);
        assert_eq!(r.status, 302, "{version}");
        assert!(r.header("location").is_some(), "{version}");
        assert_eq!(r.header("x-local"), Some("redirect"), "{version}");
        let r = curl_with(&gw, version, "/no-backend", &[]);
        assert_eq!(
            (r.status, r.header("x-local")),
            (500, Some("direct")),
            "{version}"
        );
        // One share of two goes to a backend that does not resolve: its 500 is edited too.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let r = curl_with(&gw, version, "/half-missing", &[]);
            assert_eq!(r.header("x-local"), Some("share"), "{version} {}", r.status);
            seen.insert(r.status);
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [200, 500], "{version}");
    }
}

#[test]
fn kgw_apply_refuses_header_edits_of_host_or_connection_specific_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    let route = |filter: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: bad\n  namespace: {NS}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - filters: [{filter}]\n    backendRefs: [{{name: echo, port: 80}}]\n"
        )
    };
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &route(
            "{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: Host, value: b.example}]}}",
        ),
    );
    let said = stderr(&out) + &stdout(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(
            "HTTPRoute \"filters/bad\" is invalid: spec.rules[0].filters[0].requestHeaderModifier.add[0].name"
        ),
        "{said}"
    );
    assert!(said.contains("URLRewrite filter's hostname"), "{said}");
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &route("{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: Keep-Alive, value: timeout=5}]}}"),
    );
    let said = stderr(&out) + &stdout(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("spec.rules[0].filters[0].responseHeaderModifier.set[0].name")
            && said.contains("HTTP/2"),
        "{said}"
    );
    // Nothing was admitted: the other routes still answer over HTTP/2.
    let r = curl_with(&gw, "--http2-prior-knowledge", "/resp", &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn a_backend_refs_header_filters_apply_only_when_it_is_picked() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let version = VERSIONS[i % 2];
        let r = curl_with(&gw, version, "/backend-headers", &["x-backend: client"]);
        assert_eq!(r.status, 200, "{version}");
        let sent = echoed(&r, "x-backend");
        assert_eq!(sent.len(), 1, "{version}: {sent:?}");
        // The response edit is the picked backend's too.
        assert_eq!(r.header("x-picked"), Some(sent[0].as_str()), "{version}");
        seen.insert(sent[0].clone());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["echo", "echo-b"]);
}

#[test]
fn url_rewrite_changes_the_host_and_path_sent_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _b) = start(dir.path());
    for version in VERSIONS {
        for (path, want_path, want_host) in [
            ("/prefix/one/two?x=y", "/one/two?x=y", "one.example.org"),
            ("/strip-prefix/three", "/three", ""),
            ("/strip-prefix", "/", ""),
            ("/full/one/two", "/one", ""),
        ] {
            let r = curl_with(&gw, version, path, &[]);
            assert_eq!(r.status, 200, "{version} {path}");
            let echo = r.json();
            assert_eq!(echo["path"], want_path, "{version} {path}");
            let host = if want_host.is_empty() {
                format!("127.0.0.1:{}", gw.port)
            } else {
                want_host.to_string()
            };
            assert_eq!(echo["host"], host.as_str(), "{version} {path}");
        }
        // To the HTTP/2 backend: `:path` (the sample backend shows a Host header, which an
        // HTTP/2 request does not have, not `:authority`).
        let r = curl_with(&gw, version, "/anything/rewrite/x?a=b", &[]);
        assert_eq!(r.status, 200, "{version}");
        assert_eq!(r.json()["url"], "http://localhost/anything/x?a=b", "{version}");
    }
}

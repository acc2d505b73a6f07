//! Kubernetes mode against a real kube-apiserver (built by `bash .ci/run` from Debian's source
//! into `.k8sbin/`): the guide with real kubectl, status written back, deletes seen.
//! Without the API server binary these tests print why and pass, except under CI, where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const CLUSTER: &str = "kube_httpbin_httpbin_8000";

struct ApiServer {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl ApiServer {
    fn start() -> Option<ApiServer> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let bin = root.join(".k8sbin");
        if !bin.join("kube-apiserver").exists() {
            let why = format!(
                "no kube-apiserver in {} (bash .ci/run builds it with ../shared/tools/kube-apiserver/build.sh)",
                bin.display()
            );
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the Kubernetes tests: {why}"
            );
            eprintln!("skipping the Kubernetes tests: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = root.join("../shared/tools/kube-apiserver/start.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("BIN", &bin)
            .env("D", dir.path())
            .env("ETCD_PORT", free_port().to_string())
            .env("ETCD_PEER_PORT", free_port().to_string())
            .env("APISERVER_PORT", free_port().to_string())
            .output()
            .expect("start.sh runs");
        assert!(
            out.status.success(),
            "start.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = ApiServer {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
        };
        wait_for("the API server to serve", Duration::from_secs(60), || {
            server
                .kubectl(&["get", "--raw", "/readyz"], "")
                .status
                .success()
                .then_some(())
        });
        Some(server)
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is installed");
        use std::io::Write;
        // kubectl may exit before reading all of stdin; its stderr says why.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn apply(&self, yaml: &str) {
        let out = self.kubectl(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for name in ["apiserver.pid", "etcd.pid", "kcm.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(name)) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// kgateway's "Sample app" with the httpbin Service's endpoint on a loopback backend.
/// `slice_version`: the EndpointSlice version the API server serves (v1beta1 before 1.21).
fn sample_app(gateway_port: u16, backend_port: u16, slice_version: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: kgateway-system
---
apiVersion: v1
kind: Namespace
metadata:
  name: httpbin
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: kgateway
spec:
  controllerName: kgateway.dev/kgateway
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: http
  namespace: kgateway-system
spec:
  gatewayClassName: kgateway
  listeners:
  - protocol: HTTP
    port: {gateway_port}
    name: http
    allowedRoutes:
      namespaces:
        from: All
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: {backend_port}
---
apiVersion: discovery.k8s.io/{slice_version}
kind: EndpointSlice
metadata:
  name: httpbin-local
  namespace: httpbin
  labels:
    kubernetes.io/service-name: httpbin
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
  conditions:
    ready: true
ports:
- name: http
  port: {backend_port}
  protocol: TCP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httpbin
  namespace: httpbin
spec:
  parentRefs:
  - name: http
    namespace: kgateway-system
  hostnames:
  - "www.example.com"
  rules:
  - backendRefs:
    - name: httpbin
      port: 8000
"#
    )
}

fn keepalive_in_dump(gw: &Gateway) -> Option<serde_json::Value> {
    gw.cluster(CLUSTER)
        .and_then(|c| c.get("upstream_connection_options").cloned())
}

#[test]
fn the_guide_with_kubectl() {
    let Some(api) = ApiServer::start() else { return };
    let crds = Command::new(KGW).arg("crds").output().unwrap();
    assert!(crds.status.success(), "{}", String::from_utf8_lossy(&crds.stderr));
    api.apply(&String::from_utf8_lossy(&crds.stdout));
    wait_for("the CRDs to be established", Duration::from_secs(30), || {
        api.kubectl(&["get", "backendconfigpolicies", "-A"], "")
            .status
            .success()
            .then_some(())
    });

    let backend_port = free_port();
    let _backend = {
        let child = Command::new(KGW)
            .args(["sample-backend", "--listen", &format!("127.0.0.1:{backend_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc {
            child,
            log: PathBuf::new(),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let served = api.kubectl(&["api-versions"], "");
    let slice_version = if String::from_utf8_lossy(&served.stdout)
        .lines()
        .any(|l| l == "discovery.k8s.io/v1")
    {
        "v1"
    } else {
        "v1beta1"
    };
    api.apply(&sample_app(port, backend_port, slice_version));

    let mut builder = GatewayBuilder::run(dir.path(), port).arg("--kubernetes");
    builder
        .env
        .push(("KUBECONFIG".into(), api.kubeconfig.display().to_string()));
    let gw = builder.start();
    let (status, body) = wait_for("the sample route to serve", Duration::from_secs(10), || {
        let r = gw.curl("www.example.com", "/headers");
        (r.0 == 200).then_some(r)
    });
    assert_eq!(status, 200, "{body}");

    // The guide's YAML through kubectl.
    api.apply(GUIDE_POLICY);
    let shown = wait_for("the dump to show the policy", Duration::from_secs(2), || {
        keepalive_in_dump(&gw)
    });
    assert_eq!(
        shown,
        serde_json::json!({"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5}})
    );
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);
    let sockets = upstream_keepalive(gw.pid(), backend_port);
    assert!(
        !sockets.is_empty()
            && sockets
                .iter()
                .all(|s| s.enabled && s.idle_secs == 30 && s.interval_secs == 5 && s.probes == 3),
        "{sockets:?}"
    );

    // Status written back, as kubectl shows it.
    let yaml = wait_for(
        "the policy status in the API server",
        Duration::from_secs(10),
        || {
            let out = api.kubectl(
                &[
                    "get",
                    "backendconfigpolicy",
                    "-n",
                    "httpbin",
                    "httpbin-keepalive",
                    "-o",
                    "yaml",
                ],
                "",
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("type: Attached").then_some(text)
        },
    );
    let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let conditions = v["status"]["ancestors"][0]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True"),
        "{yaml}"
    );
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Attached" && c["status"] == "True"),
        "{yaml}"
    );
    assert_eq!(
        v["status"]["ancestors"][0]["controllerName"],
        "kgateway.dev/kgateway"
    );

    // Delete: gone from the dump within 2 s.
    let out = api.kubectl(
        &[
            "delete",
            "backendconfigpolicy",
            "httpbin-keepalive",
            "-n",
            "httpbin",
        ],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the dump to drop the policy", Duration::from_secs(2), || {
        keepalive_in_dump(&gw).is_none().then_some(())
    });
}

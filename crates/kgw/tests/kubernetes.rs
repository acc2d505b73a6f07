//! Kubernetes mode against a real kube-apiserver (built by `bash scripts/test` from Debian's source
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
                "no kube-apiserver in {} (bash scripts/test builds it with ../shared/tools/kube-apiserver/build.sh)",
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

/// kgateway's "Sample app" with the httpbin Service's endpoint on a loopback backend, as
/// `kgw quickstart --print-manifest` gives it. `slice_version`: the EndpointSlice version the API
/// server serves (v1beta1 before 1.21).
fn sample_app(gateway_port: u16, backend_port: u16, slice_version: &str) -> String {
    let out = Command::new(KGW)
        .args([
            "quickstart",
            "--print-manifest",
            "--port",
            &gateway_port.to_string(),
        ])
        .args(["--backend-address", &format!("127.0.0.1:{backend_port}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).replace(
        "apiVersion: discovery.k8s.io/v1\n",
        &format!("apiVersion: discovery.k8s.io/{slice_version}\n"),
    )
}

fn keepalive_in_dump(gw: &Gateway) -> Option<serde_json::Value> {
    gw.cluster(CLUSTER)
        .and_then(|c| c.get("upstream_connection_options").cloned())
}

/// `kgw run --kubernetes` against `api`, serving the Gateway's `port`, with a short Lease.
fn replica(api: &ApiServer, dir: &Path, port: u16) -> Gateway {
    let mut builder = GatewayBuilder::run(dir, port)
        .arg("--kubernetes")
        .arg("--lease-duration")
        .arg(LEASE_SECONDS.to_string() + "s");
    builder
        .env
        .push(("KUBECONFIG".into(), api.kubeconfig.display().to_string()));
    builder.start()
}

const LEASE_SECONDS: u64 = 6;

/// The API server with kgw's CRDs and the sample app, a sample backend, and `kgw run --kubernetes`.
struct Setup {
    api: ApiServer,
    gw: Gateway,
    port: u16,
    backend_port: u16,
    _backend: Proc,
    _dir: tempfile::TempDir,
}

/// The httpbin-compatible sample backend on loopback, killed on drop.
fn sample_backend(port: u16) -> Proc {
    sample_backend_on(
        port,
        std::env::temp_dir().join(format!("kgw-k8s-backend-{port}.log")),
    )
}

/// `kgw crds --no-cel` applied (the test server is 1.20, which refuses CEL rules), and waited
/// for until BackendConfigPolicies can be listed.
fn install_crds(api: &ApiServer) {
    let crds = Command::new(KGW).args(["crds", "--no-cel"]).output().unwrap();
    assert!(crds.status.success(), "{}", String::from_utf8_lossy(&crds.stderr));
    api.apply(&String::from_utf8_lossy(&crds.stdout));
    wait_for("the CRDs to be established", Duration::from_secs(30), || {
        api.kubectl(&["get", "backendconfigpolicies", "-A"], "")
            .status
            .success()
            .then_some(())
    });
}

/// The EndpointSlice version the API server serves (the 1.20 test server has only v1beta1).
fn slice_version(api: &ApiServer) -> &'static str {
    let served = api.kubectl(&["api-versions"], "");
    if String::from_utf8_lossy(&served.stdout)
        .lines()
        .any(|l| l == "discovery.k8s.io/v1")
    {
        "v1"
    } else {
        "v1beta1"
    }
}

fn setup() -> Option<Setup> {
    let api = ApiServer::start()?;
    install_crds(&api);

    let backend_port = free_port();
    let backend = sample_backend(backend_port);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let slice_version = slice_version(&api);
    api.apply(&sample_app(port, backend_port, slice_version));

    let gw = replica(&api, dir.path(), port);
    wait_for("the sample route to serve", Duration::from_secs(10), || {
        (gw.curl("www.example.com", "/headers").0 == 200).then_some(())
    });
    Some(Setup {
        api,
        gw,
        port,
        backend_port,
        _backend: backend,
        _dir: dir,
    })
}

#[test]
fn the_guide_with_kubectl() {
    let Some(setup) = setup() else { return };
    let Setup {
        api,
        gw,
        backend_port,
        ..
    } = &setup;
    let backend_port = *backend_port;

    // The guide's YAML through kubectl.
    api.apply(GUIDE_POLICY);
    let shown = wait_for("the dump to show the policy", Duration::from_secs(2), || {
        keepalive_in_dump(gw)
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
            let text = String::from_utf8_lossy(&get_guide_policy(api, "yaml")).to_string();
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
    // and the route's
    let out = api.kubectl(
        &["get", "httproute", "-n", "httpbin", "httpbin", "-o", "json"],
        "",
    );
    let route: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(route["status"]["parents"][0]["conditions"][0]["type"], "Accepted");
    assert_eq!(route["status"]["parents"][0]["conditions"][0]["status"], "True");
    // and the GatewayClass's (cluster-scoped), with what kgw supports
    let class = wait_for(
        "the GatewayClass status in the API server",
        Duration::from_secs(10),
        || {
            let out = api.kubectl(&["get", "gatewayclass", "kgateway", "-o", "json"], "");
            let class: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            class["status"]
                .get("supportedFeatures")
                .is_some()
                .then_some(class)
        },
    );
    assert!(
        class["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True" && c["reason"] == "Accepted"),
        "{class}"
    );
    assert!(
        class["status"]["supportedFeatures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "HTTPRoute"),
        "{class}"
    );

    // What writing statuses cost (`-- --nocapture`): one patch per object whose status changed.
    for line in gw
        .proc
        .log_text()
        .lines()
        .filter(|l| l.contains("status written"))
    {
        eprintln!("{}", line.rsplit("INFO").next().unwrap_or(line).trim());
    }

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
        keepalive_in_dump(gw).is_none().then_some(())
    });
}

#[test]
fn traffic_flows_while_the_api_server_is_away() {
    let Some(setup) = setup() else { return };
    let Setup { api, gw, .. } = &setup;
    let pid_file = api.dir.path().join("apiserver.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into())
        .collect();
    assert!(
        Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );

    // 10 s without the API server: every request is served, /ready stays LIVE.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while std::time::Instant::now() < until {
        let (status, body) = gw.curl("www.example.com", "/get");
        assert_eq!(status, 200, "request {sent} while the API server is away: {body}");
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http(gw.admin, "GET", "/ready", "").0, 200);
    eprintln!("{sent} requests served while the API server was away");

    // It comes back (same etcd, same flags); a change made then reaches the dump, no restart.
    let log_path = api.dir.path().join("apiserver-2.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(&pid_file, child.id().to_string()).unwrap();
    let _restarted = Proc { child, log: log_path };
    wait_for("the API server to come back", Duration::from_secs(60), || {
        api.kubectl(&["get", "--raw", "/readyz"], "")
            .status
            .success()
            .then_some(())
    });
    api.apply(GUIDE_POLICY);
    let t = std::time::Instant::now();
    wait_for("kgw to pick up the change", Duration::from_secs(60), || {
        keepalive_in_dump(gw)
    });
    eprintln!("change picked up {:?} after kubectl apply", t.elapsed());
}

fn clusters_of(gw: &Gateway) -> serde_json::Value {
    let dump = gw.dump("GET", "?include_eds&mask=cluster,endpoint_config");
    let mut v = dump["configs"].clone();
    // version and time differ between replicas; what they serve must not
    for c in v.as_array_mut().unwrap() {
        for list in ["dynamic_active_clusters", "dynamic_endpoint_configs"] {
            for item in c
                .get_mut(list)
                .and_then(|l| l.as_array_mut())
                .into_iter()
                .flatten()
            {
                if let Some(m) = item.as_object_mut() {
                    m.remove("version_info");
                    m.remove("last_updated");
                }
            }
        }
    }
    v
}

fn lease_holder(api: &ApiServer) -> String {
    let out = api.kubectl(
        &[
            "get",
            "lease",
            "kgw-status-writer",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        "",
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn two_replicas_one_status_writer() {
    let Some(setup) = setup() else { return };
    let Setup {
        api, gw: first, port, ..
    } = &setup;
    let dir = tempfile::tempdir().unwrap();
    let second = replica(api, dir.path(), *port);

    api.apply(GUIDE_POLICY);
    wait_for(
        "both replicas to serve the policy",
        Duration::from_secs(5),
        || (keepalive_in_dump(first).is_some() && keepalive_in_dump(&second).is_some()).then_some(()),
    );
    assert_eq!(
        clusters_of(first),
        clusters_of(&second),
        "both replicas serve the same dump"
    );

    let holder = wait_for("a lease holder", Duration::from_secs(10), || {
        Some(lease_holder(api)).filter(|h| !h.is_empty())
    });
    let (leader, follower) = if holder.ends_with(&format!("-{}", first.pid())) {
        (first, &second)
    } else {
        (&second, first)
    };
    assert!(holder.ends_with(&format!("-{}", leader.pid())), "holder {holder}");
    wait_for(
        "the leader to write the policy status",
        Duration::from_secs(10),
        || leader.proc.log_text().contains("status written").then_some(()),
    );
    assert!(
        !follower.proc.log_text().contains("status written"),
        "only the leader writes statuses"
    );

    // The leader goes away: the other replica takes the Lease and writes the next status.
    let killed = std::time::Instant::now();
    let leader_pid = leader.pid();
    let _ = Command::new("kill")
        .arg("-9")
        .arg(leader_pid.to_string())
        .status();
    let second_policy = GUIDE_POLICY.replace("name: httpbin-keepalive", "name: httpbin-second");
    api.apply(&second_policy);
    wait_for(
        "the other replica to write the new policy's status",
        Duration::from_secs(3 * LEASE_SECONDS),
        || {
            let out = api.kubectl(
                &[
                    "get",
                    "backendconfigpolicy",
                    "-n",
                    "httpbin",
                    "httpbin-second",
                    "-o",
                    "yaml",
                ],
                "",
            );
            String::from_utf8_lossy(&out.stdout)
                .contains("type: Attached")
                .then_some(())
        },
    );
    let took = killed.elapsed();
    eprintln!(
        "status writing moved to the other replica {took:?} after the leader was killed (lease {LEASE_SECONDS} s)"
    );
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS + LEASE_SECONDS / 3 + 2),
        "{took:?}"
    );
    assert!(follower.proc.log_text().contains("status written"));
    assert!(lease_holder(api).ends_with(&format!("-{}", follower.pid())));
}

#[test]
fn kubectl_apply_of_a_bad_policy_is_refused_by_the_webhook() {
    let Some(api) = ApiServer::start() else { return };
    let crds = Command::new(KGW).args(["crds", "--no-cel"]).output().unwrap();
    api.apply(&String::from_utf8_lossy(&crds.stdout));
    wait_for("the CRDs to be established", Duration::from_secs(30), || {
        api.kubectl(&["get", "backendconfigpolicies", "-A"], "")
            .status
            .success()
            .then_some(())
    });
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: httpbin\n");

    // A certificate for 127.0.0.1, as cert-manager would provide in a cluster.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kgw-webhook",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let webhook = format!("127.0.0.1:{}", free_port());
    let mut builder = GatewayBuilder::run(dir.path(), free_port())
        .arg("--kubernetes")
        .arg("--webhook-address")
        .arg(&webhook)
        .arg("--webhook-cert")
        .arg(cert.to_str().unwrap())
        .arg("--webhook-key")
        .arg(key.to_str().unwrap());
    builder
        .env
        .push(("KUBECONFIG".into(), api.kubeconfig.display().to_string()));
    let gw = builder.start();

    let ca = base64(&std::fs::read(&cert).unwrap());
    api.apply(&format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: kgw
webhooks:
- name: validate.gateway.kgateway.dev
  clientConfig:
    url: https://{webhook}/validate
    caBundle: {ca}
  rules:
  - apiGroups: ["gateway.kgateway.dev"]
    apiVersions: ["v1alpha1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["backendconfigpolicies"]
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
"#
    ));
    let before = clusters_of(&gw);

    let bad = [
        (
            GUIDE_POLICY.replace("keepAliveTime: 30s", "keepAliveTime: 500ms"),
            "keepAliveTime must be at least 1 second",
        ),
        (
            GUIDE_POLICY.replace("keepAliveProbes: 3", "keepAliveProbes: 200"),
            "between 1 and 127",
        ),
        (
            GUIDE_POLICY.replace(
                "keepAliveInterval: 5s",
                "keepAliveInterval: 5s\n    keepAliveTme: 30s",
            ),
            "keepAliveTme",
        ),
    ];
    for (doc, words) in &bad {
        let out = wait_for("the webhook to answer", Duration::from_secs(10), || {
            let out = api.kubectl(&["apply", "-f", "-"], doc);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            // until the webhook configuration is live, a bad policy may still go through
            if out.status.success() {
                let _ = api.kubectl(
                    &[
                        "delete",
                        "backendconfigpolicy",
                        "-n",
                        "httpbin",
                        "httpbin-keepalive",
                    ],
                    "",
                );
                return None;
            }
            Some(err)
        });
        assert!(out.contains(words), "refused with our message ({words}): {out}");
        eprintln!("kubectl apply refused: {}", out.trim());
    }
    assert_eq!(clusters_of(&gw), before, "nothing changed in the dump");
    // And the guide's policy itself is admitted.
    api.apply(GUIDE_POLICY);
    // The webhook's own time per review, for the record (`-- --nocapture`).
    let log = gw.proc.log_text();
    let reviews: Vec<&str> = log.lines().filter(|l| l.contains("admission reviewed")).collect();
    assert!(!reviews.is_empty(), "the webhook logs its reviews");
    for line in reviews {
        eprintln!("{}", line.rsplit("DEBUG").next().unwrap_or(line).trim());
    }
}

/// Standard base64, for the webhook's caBundle.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_committed_crds_are_what_kgw_crds_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (file, args) in [
        ("crds.yaml", &["crds"][..]),
        ("crds-no-cel.yaml", &["crds", "--no-cel"][..]),
    ] {
        let committed = std::fs::read_to_string(root.join("deploy/kustomize").join(file)).unwrap();
        let out = Command::new(KGW).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            committed == String::from_utf8_lossy(&out.stdout),
            "deploy/kustomize/{file} is stale: run `cargo run -p kgw -- {} > deploy/kustomize/{file}`",
            args.join(" ")
        );
    }
}

/// Why `--no-cel` exists: an API server before 1.25 (ours is 1.20) refuses the CRDs with CEL
/// rules, naming the field; the same CRDs without them are accepted.
#[test]
fn an_api_server_before_1_25_refuses_the_cel_rules_and_takes_no_cel() {
    let Some(api) = ApiServer::start() else { return };
    let with_rules = Command::new(KGW).arg("crds").output().unwrap();
    assert!(with_rules.status.success());
    let refused = api.kubectl(
        &["apply", "-f", "-"],
        &String::from_utf8_lossy(&with_rules.stdout),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("x-kubernetes-validations"),
        "kubectl apply of `kgw crds` on 1.20: {stderr}"
    );
    let without = Command::new(KGW).args(["crds", "--no-cel"]).output().unwrap();
    api.apply(&String::from_utf8_lossy(&without.stdout));
}

#[test]
fn the_install_manifests_apply_to_a_real_api_server() {
    let Some(api) = ApiServer::start() else { return };
    let crds = Command::new(KGW).args(["crds", "--no-cel"]).output().unwrap();
    api.apply(&String::from_utf8_lossy(&crds.stdout));
    wait_for("the CRDs to be established", Duration::from_secs(30), || {
        api.kubectl(&["get", "gatewayclasses"], "")
            .status
            .success()
            .then_some(())
    });
    // The base as its kustomization.yaml says to use it on an API server older than 1.25:
    // crds-no-cel.yaml in place of crds.yaml.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let base = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root.join("deploy/kustomize")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, base.path().join(path.file_name().unwrap())).unwrap();
    }
    let kustomization = std::fs::read_to_string(base.path().join("kustomization.yaml")).unwrap();
    assert!(kustomization.contains("\n- crds.yaml\n"), "{kustomization}");
    std::fs::write(
        base.path().join("kustomization.yaml"),
        kustomization.replace("\n- crds.yaml\n", "\n- crds-no-cel.yaml\n"),
    )
    .unwrap();
    let rendered = api.kubectl(&["kustomize", base.path().to_str().unwrap()], "");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let manifests = String::from_utf8_lossy(&rendered.stdout).to_string();
    // A server-side dry run creates nothing, so objects in the namespace need it to exist.
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kgateway-system\n");
    let out = api.kubectl(&["apply", "--dry-run=server", "-f", "-"], &manifests);
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=server of the kustomize base: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    for object in [
        "deployment.apps/kgw",
        "service/kgw",
        "clusterrole.rbac.authorization.k8s.io/kgw",
    ] {
        assert!(applied.contains(object), "{object} in {applied}");
    }
}

/// Creates `objects` through the API, 32 at a time (kubectl's client-side rate limit would take
/// over 20 minutes for thousands).
fn create_all(api: &ApiServer, objects: Vec<serde_json::Value>) {
    send_all(api, objects, false)
}

/// Without the webhook the API server stores a policy kgw refuses: kgw keeps serving what it
/// had, and the policy's status says what is wrong; fixing it makes it Accepted and served.
#[test]
fn a_refused_policy_says_why_in_its_status_and_serving_goes_on() {
    let Some(setup) = setup() else { return };
    let Setup { api, gw, .. } = &setup;
    api.apply(GUIDE_POLICY);
    wait_for("the dump to show the policy", Duration::from_secs(2), || {
        keepalive_in_dump(gw)
    });
    let bad = GUIDE_POLICY.replace("keepAliveTime: 30s", "keepAliveTime: 500ms");
    assert_ne!(bad, GUIDE_POLICY);
    api.apply(&bad);
    let status = wait_for(
        "the policy status to say it is not accepted",
        Duration::from_secs(10),
        || guide_policy_accepted(api).filter(|c| c["status"] == "False"),
    );
    assert_eq!(status["reason"], "Invalid");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("spec.tcpKeepalive.keepAliveTime")
            && message.contains("500ms")
            && message.contains("at least 1 second"),
        "{message}"
    );
    // What was accepted before still serves.
    assert_eq!(
        keepalive_in_dump(gw),
        Some(
            serde_json::json!({"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5}})
        )
    );
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);

    // Fixed: accepted again and served.
    api.apply(&GUIDE_POLICY.replace("keepAliveTime: 30s", "keepAliveTime: 40s"));
    wait_for("the fixed policy in the dump", Duration::from_secs(2), || {
        (keepalive_in_dump(gw)?["tcp_keepalive"]["keepalive_time"] == 40).then_some(())
    });
    wait_for("the policy to be accepted again", Duration::from_secs(10), || {
        guide_policy_accepted(api).filter(|c| c["status"] == "True")
    });
}

/// A Gateway updated to something kgw does not serve yet (a TCP listener) is refused with
/// a status that says why, stays refused whatever else happens to Gateways and GatewayClasses,
/// and its last accepted version keeps serving.
#[test]
fn a_refused_gateway_stays_refused_and_keeps_serving() {
    let Some(setup) = setup() else { return };
    let Setup { api, gw, port, .. } = &setup;
    let gateway = |protocol: &str, name: &str, listen: u16| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
             namespace: kgateway-system\nspec:\n  gatewayClassName: kgateway\n  listeners:\n  - protocol: {protocol}\n    \
             port: {listen}\n    name: http\n    allowedRoutes:\n      namespaces:\n        from: All\n"
        )
    };
    // The Accepted condition of Gateway `name`, as `kubectl get -o json` shows it.
    let accepted_of = |name: &str| -> Option<serde_json::Value> {
        let out = api.kubectl(
            &["get", "gateway", "-n", "kgateway-system", name, "-o", "json"],
            "",
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Accepted")
            .cloned()
    };
    let accepted = || accepted_of("http");
    api.apply(&gateway("TCP", "http", *port));
    let refused = wait_for(
        "the Gateway refused in its status",
        Duration::from_secs(10),
        || accepted().filter(|c| c["status"] == "False"),
    );
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("spec.listeners[0].protocol") && message.contains("TCP"),
        "{message}"
    );

    // Other Gateway and GatewayClass events do not bring back the accepted version's status.
    api.apply(&gateway("HTTP", "other", free_port()));
    api.kubectl(&["annotate", "gatewayclass", "kgateway", "touched=yes"], "");
    wait_for("the other Gateway served", Duration::from_secs(10), || {
        accepted_of("other").filter(|c| c["status"] == "True")
    });
    assert_eq!(accepted().map(|c| c["status"].clone()), Some("False".into()));
    // What was accepted before still serves.
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);

    api.apply(&gateway("HTTP", "http", *port));
    wait_for("the Gateway accepted again", Duration::from_secs(10), || {
        accepted().filter(|c| c["status"] == "True")
    });
}

/// `kubectl get backendconfigpolicy -n httpbin httpbin-keepalive -o OUTPUT`.
fn get_guide_policy(api: &ApiServer, output: &str) -> Vec<u8> {
    let args = [
        "get",
        "backendconfigpolicy",
        "-n",
        "httpbin",
        "httpbin-keepalive",
        "-o",
        output,
    ];
    api.kubectl(&args, "").stdout
}

/// The guide policy's Accepted condition, as `kubectl get -o json` shows it.
fn guide_policy_accepted(api: &ApiServer) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&get_guide_policy(api, "json")).ok()?;
    v["status"]["ancestors"][0]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Accepted")
        .cloned()
}

/// Creates (or, with `patch`, merge-patches) objects through the API with kube-rs, 32 at a
/// time (kubectl's client-side rate limit would make this take minutes).
fn send_all(api: &ApiServer, objects: Vec<serde_json::Value>, patch: bool) {
    use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for object in objects {
            let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), object["apiVersion"].as_str().unwrap().to_string()),
            };
            let gvk = kube::api::GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
            let (ar, _) = discovery.resolve_gvk(&gvk).unwrap();
            let namespace = object["metadata"]["namespace"].as_str().unwrap().to_string();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &ar);
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            while tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap();
            }
            tasks.spawn(async move {
                if patch {
                    let name = object.metadata.name.clone().unwrap();
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&object))
                        .await
                        .unwrap();
                } else {
                    api.create(&PostParams::default(), &object).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
}

/// Scale: 2,000 Services with EndpointSlices, 2,000 HTTPRoutes and 500 BackendConfigPolicies
/// created through the API. Prints the time until the dump shows them all, the time one more
/// policy change takes to reach the dump (p50/p99 of 20), and kgw's RSS and CPU.
#[test]
fn scale_2000_services_2000_routes_500_policies() {
    let Some(setup) = setup() else { return };
    let Setup { api, gw, port, .. } = &setup;
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scale\n");
    let served = api.kubectl(&["api-versions"], "");
    let slices = if String::from_utf8_lossy(&served.stdout)
        .lines()
        .any(|l| l == "discovery.k8s.io/v1")
    {
        "discovery.k8s.io/v1"
    } else {
        "discovery.k8s.io/v1beta1"
    };
    const SERVICES: usize = 2000;
    const POLICIES: usize = 500;
    let mut objects = Vec::new();
    for i in 0..SERVICES {
        objects.push(serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": "scale"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}));
        objects.push(serde_json::json!({"apiVersion": slices, "kind": "EndpointSlice",
            "metadata": {"name": format!("svc-{i}-1"), "namespace": "scale", "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4", "endpoints": [{"addresses": [format!("127.0.0.{}", 1 + i % 250)]}],
            "ports": [{"name": "http", "port": 8080}]}));
        objects.push(
            serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("route-{i}"), "namespace": "scale"},
            "spec": {"parentRefs": [{"name": "http", "namespace": "kgateway-system"}],
                     "hostnames": [format!("svc-{i}.example.com")],
                     "rules": [{"backendRefs": [{"name": format!("svc-{i}"), "port": 80}]}]}}),
        );
    }
    for i in 0..POLICIES {
        objects.push(
            serde_json::json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "BackendConfigPolicy",
            "metadata": {"name": format!("policy-{i}"), "namespace": "scale"},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": format!("svc-{i}")}],
                     "tcpKeepalive": {"keepAliveProbes": 3, "keepAliveTime": "30s"}}}),
        );
    }
    let pid = gw.pid();
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let rss_mib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        kib / 1024
    };
    let cpu0 = cpu();
    let started = std::time::Instant::now();
    create_all(api, objects);
    let created = started.elapsed();
    let query = "/config_dump?resource=dynamic_active_clusters&name_regex=kube_scale_.*&mask=cluster.name,cluster.upstream_connection_options";
    let shown = wait_for(
        "the dump to show every service and policy",
        Duration::from_secs(300),
        || {
            let (_, body) = http(gw.admin, "GET", query, "");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let clusters = v["configs"].as_array().cloned().unwrap_or_default();
            let with_policy = clusters
                .iter()
                .filter(|c| c["cluster"].get("upstream_connection_options").is_some())
                .count();
            (clusters.len() == SERVICES && with_policy == POLICIES).then(|| started.elapsed())
        },
    );
    let (status, _) = curl(*port, &format!("svc-{}.example.com", SERVICES - 1), "/");
    assert_ne!(status, 404, "the last route is served");
    let cpu_load = cpu() - cpu0;
    let rss_loaded = rss_mib();

    let mut latencies = Vec::new();
    for n in 0..20 {
        let i = n * 7 % POLICIES;
        let timeout = format!("{}s", 10 + n);
        let patch = format!("{{\"spec\":{{\"connectTimeout\":\"{timeout}\"}}}}");
        let name = format!("policy-{i}");
        let out = api.kubectl(
            &[
                "patch",
                "backendconfigpolicy",
                &name,
                "-n",
                "scale",
                "--type",
                "merge",
                "-p",
                &patch,
            ],
            "",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let t = std::time::Instant::now();
        let want = format!("\"connect_timeout\": \"{timeout}\"");
        let path = format!("/config_dump?resource=dynamic_active_clusters&name_regex=kube_scale_svc-{i}_80");
        wait_for("the change in the dump", Duration::from_secs(30), || {
            http(gw.admin, "GET", &path, "").1.contains(&want).then_some(())
        });
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);

    // A burst of 1,000 updates (every policy's connect timeout, twice) makes a few snapshots.
    let snapshots = || -> u64 {
        let (_, body) = http(
            gw.admin,
            "GET",
            "/stats?filter=^cluster_manager.cds.update_success$",
            "",
        );
        body.trim()
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let before = snapshots();
    let burst_started = std::time::Instant::now();
    for timeout in ["6s", "7s"] {
        let patches = (0..POLICIES)
            .map(|i| serde_json::json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "BackendConfigPolicy",
                "metadata": {"name": format!("policy-{i}"), "namespace": "scale"},
                "spec": {"connectTimeout": timeout}}))
            .collect();
        send_all(api, patches, true);
    }
    let sent = burst_started.elapsed();
    let burst_query =
        "/config_dump?resource=dynamic_active_clusters&name_regex=kube_scale_.*&mask=cluster.connect_timeout";
    wait_for("the burst in the dump", Duration::from_secs(60), || {
        let (_, body) = http(gw.admin, "GET", burst_query, "");
        (body.matches("\"7s\"").count() == POLICIES).then_some(())
    });
    let burst_shown = burst_started.elapsed();
    let burst_snapshots = snapshots() - before;
    eprintln!(
        "burst: 1,000 policy updates sent in {sent:?}, all in the dump after {burst_shown:?}, in {burst_snapshots} snapshots"
    );
    assert!(
        burst_snapshots < 200,
        "1,000 updates made {burst_snapshots} snapshots: changes are not coalesced"
    );
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!(
        "scale: {SERVICES} services + slices + routes, {POLICIES} policies: created through the API in {created:?}; \
         the dump showed all {shown:?} after the first create; one policy change to the dump: p50 {p50:?}, \
         p99 (max of 20) {p99:?}; kgw RSS {rss_loaded} MiB, CPU {cpu_load:.1} s while loading ({profile} build)"
    );
    let log = gw.proc.log_text();
    for line in log
        .lines()
        .filter(|l| l.contains("snapshot served"))
        .rev()
        .take(25)
    {
        eprintln!("{line}");
    }
    assert!(
        p99 < Duration::from_secs(2),
        "a change reached the dump after {p99:?}"
    );
}

/// Issue 13: in Kubernetes mode the API server is the only source, and `/ready` means served.
/// A state directory left by `kgw quickstart` (its Gateway `http` on another port) is not read,
/// and a request sent the moment `/ready` says LIVE reaches the cluster's listener.
#[test]
fn ready_means_the_cluster_is_served_and_a_leftover_state_directory_changes_nothing() {
    let Some(api) = ApiServer::start() else { return };
    install_crds(&api);
    let dir = tempfile::tempdir().unwrap();
    // The quickstart leaves Gateway kgateway-system/http (on its own port) in the state dir.
    let quickstart = GatewayBuilder::quickstart(dir.path()).start();
    let leftover_port = quickstart.port;
    let backend_port = quickstart.backend_port;
    drop(quickstart);
    let backend = sample_backend(backend_port);
    let port = free_port();
    let slice_version = slice_version(&api);
    api.apply(&sample_app(port, backend_port, slice_version));
    wait_for("the sample backend", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", backend_port)).ok()
    });

    // `replica` returns as soon as /ready says LIVE: the request goes out right then.
    let gw = replica(&api, dir.path(), port);
    let (status, body) = gw.curl("www.example.com", "/headers");
    assert_eq!(status, 200, "right after /ready: {body}\n{}", gw.proc.log_text());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", leftover_port)).is_err(),
        "the state directory's Gateway (port {leftover_port}) is served"
    );
    let out = gw.kgw(&["get", "gateways", "-A"], "");
    assert!(stdout(&out).contains("kgateway-system"), "{}", stdout(&out));
    // Nor can `kgw apply` add a source beside the API server.
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &sample_app(free_port(), backend_port, slice_version),
    );
    assert!(!out.status.success(), "kgw apply was accepted in Kubernetes mode");
    assert!(
        stderr(&out).contains("Kubernetes mode") && stderr(&out).contains("kubectl apply"),
        "{}",
        stderr(&out)
    );
    drop(backend);
}

/// A CRD that is not installed (the API server answers 404 to its list) is a kind with no
/// objects: kgw becomes ready and serves, and says how to install it (it stayed 503
/// PRE_INITIALIZING for ever, and the shipped liveness probe restarted it).
#[test]
fn a_missing_crd_does_not_keep_kgw_unready() {
    let Some(api) = ApiServer::start() else { return };
    let crds = Command::new(KGW).args(["crds", "--no-cel"]).output().unwrap();
    assert!(crds.status.success(), "{}", String::from_utf8_lossy(&crds.stderr));
    let all = String::from_utf8_lossy(&crds.stdout);
    let without_policies: Vec<&str> = all
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: backendconfigpolicies.gateway.kgateway.dev"))
        .collect();
    assert_eq!(
        without_policies.len() + 1,
        all.split("\n---\n").count(),
        "the BackendConfigPolicy CRD is one document of `kgw crds`"
    );
    api.apply(&without_policies.join("\n---\n"));
    wait_for(
        "the Gateway API CRDs to be established",
        Duration::from_secs(30),
        || {
            api.kubectl(&["get", "httproutes", "-A"], "")
                .status
                .success()
                .then_some(())
        },
    );
    let backend_port = free_port();
    let _backend = sample_backend(backend_port);
    let port = free_port();
    let slice_version = slice_version(&api);
    api.apply(&sample_app(port, backend_port, slice_version));

    let dir = tempfile::tempdir().unwrap();
    // Waits for /ready to be 200 LIVE (it panics otherwise).
    let gw = replica(&api, dir.path(), port);
    wait_for("the sample route to serve", Duration::from_secs(10), || {
        (gw.curl("www.example.com", "/headers").0 == 200).then_some(())
    });
    let log = gw.proc.log_text();
    assert!(
        log.contains("backendconfigpolicies.gateway.kgateway.dev")
            && log.contains("kgw crds | kubectl apply -f -"),
        "{log}"
    );
}

/// The `.status` of `kind` `namespace/name`, as `kubectl get -o json` shows it.
fn status_of(api: &ApiServer, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
    let out = api.kubectl(&["get", kind, "-n", namespace, name, "-o", "json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("status").cloned()
}

/// The names of the `kind` objects kgw holds in `namespace` (its admin API, as `kgw get` reads it).
fn names_in_kgw(gw: &Gateway, kind: &str, namespace: &str) -> Vec<String> {
    let (_, body) = http(gw.admin, "GET", &format!("/apis/{kind}/{namespace}"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect()
}

/// Issue 15's kinds in Kubernetes mode, through kubectl: a route to a Backend of type Static
/// serves, the Backend shows Accepted=True written by kgw; a kubernetes.io/tls Secret and a
/// ConfigMap with ca.crt are read; a BackendTLSPolicy that refers to the ConfigMap gets kgw's
/// verdict in its status (ResolvedRefs, or the "not supported yet" refusal while upstream TLS
/// is gated in crates/api/src/unsupported.rs).
#[test]
fn a_backend_secrets_and_a_backend_tls_policy_with_kubectl() {
    let Some(setup) = setup() else { return };
    let Setup {
        api,
        gw,
        backend_port,
        ..
    } = &setup;
    api.apply(&format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata:\n  name: static\n  namespace: httpbin\n\
         spec:\n  type: Static\n  static:\n    hosts:\n    - host: 127.0.0.1\n      port: {backend_port}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: to-backend\n  namespace: httpbin\n\
         spec:\n  parentRefs:\n  - name: http\n    namespace: kgateway-system\n  hostnames: [backend.example.com]\n  \
         rules:\n  - backendRefs:\n    - group: gateway.kgateway.dev\n      kind: Backend\n      name: static\n"
    ));
    wait_for(
        "the route to the Backend to serve",
        Duration::from_secs(10),
        || (gw.curl("backend.example.com", "/get").0 == 200).then_some(()),
    );
    assert!(
        gw.cluster("backend_httpbin_static_0").is_some(),
        "the Backend's cluster is in the dump"
    );
    let accepted = wait_for(
        "kgw to write the Backend's Accepted condition",
        Duration::from_secs(10),
        || {
            status_of(api, "backend", "httpbin", "static")?["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Accepted")
                .cloned()
        },
    );
    assert_eq!(accepted["status"], "True", "{accepted}");
    let out = api.kubectl(&["get", "backend", "-n", "httpbin", "static"], "");
    eprintln!("kubectl get backend:\n{}", stdout(&out));

    // TLS material: a kubernetes.io/tls Secret (with ca.crt) and a ConfigMap holding ca.crt.
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(dir.path());
    let leaf = pki.leaf("backend", &["backend.example.com"]);
    api.apply(&pki::secret_yaml(
        "httpbin",
        "backend-tls",
        &leaf,
        Some(&pki.ca.cert),
    ));
    api.apply(&pki::ca_config_map_yaml("httpbin", "backend-ca", &pki.ca.cert));
    wait_for(
        "kgw to hold the Secret and the ConfigMap",
        Duration::from_secs(10),
        || {
            (names_in_kgw(gw, "secrets", "httpbin").contains(&"backend-tls".to_string())
                && names_in_kgw(gw, "configmaps", "httpbin").contains(&"backend-ca".to_string()))
            .then_some(())
        },
    );

    api.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata:\n  name: backend-tls\n  \
         namespace: httpbin\nspec:\n  targetRefs:\n  - group: gateway.kgateway.dev\n    kind: Backend\n    name: static\n  \
         validation:\n    hostname: backend.example.com\n    caCertificateRefs:\n    - group: \"\"\n      kind: ConfigMap\n      \
         name: backend-ca\n",
    );
    let ancestor = wait_for(
        "kgw to write the BackendTLSPolicy's status",
        Duration::from_secs(10),
        || {
            let status = status_of(api, "backendtlspolicy", "httpbin", "backend-tls")?;
            status["ancestors"]
                .as_array()?
                .iter()
                .find(|a| a["controllerName"] == "kgateway.dev/kgateway")
                .cloned()
        },
    );
    assert_eq!(ancestor["ancestorRef"]["kind"], "Backend", "{ancestor}");
    assert_eq!(ancestor["ancestorRef"]["name"], "static", "{ancestor}");
    let conditions = ancestor["conditions"].as_array().unwrap();
    let condition = |t: &str| conditions.iter().find(|c| c["type"] == t);
    let resolved = condition("ResolvedRefs").expect("a ResolvedRefs condition");
    assert_eq!(resolved["status"], "True", "{ancestor}");
    // The policy reaches the data plane: kgw now speaks TLS to the Backend, a plain HTTP
    // server, so the handshake fails and the request gets 503 (UF), as Envoy answers it.
    wait_for(
        "requests to the Backend to go out over TLS (503 from the plain backend)",
        Duration::from_secs(10),
        || (gw.curl("backend.example.com", "/get").0 == 503).then_some(()),
    );

    // Other implementations write their own ancestors in a BackendTLSPolicy's status: when kgw
    // writes its own again (the policy now targets the Service), theirs stay.
    let theirs = r#"{"status":{"ancestors":[{"ancestorRef":{"group":"gateway.kgateway.dev","kind":"Backend","name":"static","namespace":"httpbin"},"controllerName":"example.com/other","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"served by the other implementation","lastTransitionTime":"2026-01-01T00:00:00Z"}]}]}}"#;
    let out = api.kubectl(
        &[
            "patch",
            "backendtlspolicy",
            "-n",
            "httpbin",
            "backend-tls",
            "--subresource=status",
            "--type=merge",
            "-p",
            theirs,
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = api.kubectl(
        &[
            "patch",
            "backendtlspolicy",
            "-n",
            "httpbin",
            "backend-tls",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/targetRefs/0","value":{"group":"","kind":"Service","name":"httpbin"}}]"#,
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ancestors = wait_for(
        "kgw to write its ancestor beside the other implementation's",
        Duration::from_secs(10),
        || {
            let status = status_of(api, "backendtlspolicy", "httpbin", "backend-tls")?;
            let ancestors = status["ancestors"].as_array()?.clone();
            ancestors
                .iter()
                .any(|a| {
                    a["controllerName"] == "kgateway.dev/kgateway" && a["ancestorRef"]["kind"] == "Service"
                })
                .then_some(ancestors)
        },
    );
    assert_eq!(ancestors.len(), 2, "{ancestors:?}");
    assert!(
        ancestors
            .iter()
            .any(|a| a["controllerName"] == "example.com/other"),
        "{ancestors:?}"
    );
}

/// Secrets are watched cluster-wide: 500 small kubernetes.io/tls Secrets are read (prints what
/// they cost in kgw's RSS and the time until kgw holds them all), and one whose `ca.crt` holds no
/// certificate is refused, logged once with its name and why (not again when it is updated
/// with the same verdict), and leaves the replica ready and serving. (A tls.crt/tls.key pair is
/// taken unparsed, as the API server takes it; the listener that uses it says what is wrong.)
#[test]
fn many_secrets_cost_little_and_a_refused_one_is_logged_once() {
    let Some(setup) = setup() else { return };
    let Setup { api, gw, .. } = &setup;
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: secrets\n");
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(dir.path());
    let leaf = pki.leaf("leaf", &["leaf.example.com"]);
    let other = pki.leaf("other", &["other.example.com"]);
    let secret = |name: &str, cert: &str, key: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "secrets"},
            "stringData": {"tls.crt": cert, "tls.key": key}})
    };
    const SECRETS: usize = 500;
    let objects: Vec<serde_json::Value> = (0..SECRETS)
        .map(|i| secret(&format!("tls-{i}"), &leaf.cert_pem(), &leaf.key_pem()))
        .collect();
    let bytes: usize = objects.iter().map(|o| o.to_string().len()).sum();
    let pid = gw.pid();
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let before = rss_kib();
    let started = std::time::Instant::now();
    create_all(api, objects);
    // One watch delivers the Secrets in order: once kgw holds one created after all the others,
    // it holds them all (asking for one object keeps the test's own reads out of kgw's memory).
    api.apply(&secret("last", &leaf.cert_pem(), &leaf.key_pem()).to_string());
    wait_for("kgw to hold every Secret", Duration::from_secs(60), || {
        let (status, _) = http(gw.admin, "GET", "/apis/secrets/secrets/last", "");
        (status == 200).then_some(())
    });
    let held = started.elapsed();
    let after = rss_kib();
    assert_eq!(names_in_kgw(gw, "secrets", "secrets").len(), SECRETS + 1);
    eprintln!(
        "{SECRETS} kubernetes.io/tls Secrets ({} bytes each as JSON): all held by kgw {held:?} after the first create; \
         kgw RSS {before} KiB -> {after} KiB ({:+} KiB, about {} bytes per Secret)",
        bytes / SECRETS,
        after as i64 - before as i64,
        (after.saturating_sub(before) * 1024) as usize / SECRETS
    );

    // A Secret whose ca.crt is not a certificate bundle.
    let mut mismatched = secret("mismatched", &leaf.cert_pem(), &other.key_pem());
    mismatched["stringData"]["ca.crt"] = "not a certificate".into();
    api.apply(&mismatched.to_string());
    let refusals = || -> Vec<String> {
        gw.proc
            .log_text()
            .lines()
            .filter(|l| l.contains("not served") && l.contains("secrets/mismatched"))
            .map(String::from)
            .collect()
    };
    let logged = wait_for("kgw to log the refusal", Duration::from_secs(10), || {
        Some(refusals()).filter(|r| !r.is_empty())
    });
    assert!(
        logged[0].contains("ca.crt") && !logged[0].contains("PRIVATE KEY"),
        "the log names the field and not the key material: {}",
        logged[0]
    );
    eprintln!("refusal logged: {}", logged[0]);
    // Updated with the same verdict, then another Secret: once kgw holds that one, it has seen
    // the update (one watch, in order), and has not logged the refusal again.
    let out = api.kubectl(
        &["annotate", "secret", "-n", "secrets", "mismatched", "touched=yes"],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    api.apply(&secret("after", &leaf.cert_pem(), &leaf.key_pem()).to_string());
    wait_for("kgw to hold the next Secret", Duration::from_secs(10), || {
        names_in_kgw(gw, "secrets", "secrets")
            .contains(&"after".to_string())
            .then_some(())
    });
    assert_eq!(refusals().len(), 1, "{:?}", refusals());
    assert!(
        !names_in_kgw(gw, "secrets", "secrets").contains(&"mismatched".to_string()),
        "the refused Secret is not held"
    );
    assert_eq!(
        http(gw.admin, "GET", "/ready", "").0,
        200,
        "the replica stays ready"
    );
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);
}

/// The other kinds of issue 15 through kubectl and kgw's CRDs: the guide's ListenerPolicy is
/// accepted (its status written back) and reaches the listener; ReferenceGrants are read in both
/// versions the CRD serves, and a route across namespaces resolves only while one allows it.
#[test]
fn a_listener_policy_and_reference_grants_with_kubectl() {
    let Some(setup) = setup() else { return };
    let Setup { api, gw, .. } = &setup;
    api.apply(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: ListenerPolicy\nmetadata:\n  name: keepalive\n  \
         namespace: kgateway-system\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    \
         name: http\n  default:\n    tcpKeepalive:\n      keepAliveProbes: 3\n      keepAliveTime: 30s\n      \
         keepAliveInterval: 5s\n    perConnectionBufferLimitBytes: 32768\n",
    );
    let ancestor = wait_for(
        "kgw to write the ListenerPolicy's status",
        Duration::from_secs(10),
        || {
            status_of(api, "listenerpolicy", "kgateway-system", "keepalive")?["ancestors"]
                .as_array()?
                .iter()
                .find(|a| a["controllerName"] == "kgateway.dev/kgateway")
                .cloned()
        },
    );
    assert_eq!(ancestor["ancestorRef"]["kind"], "Gateway", "{ancestor}");
    assert_eq!(ancestor["ancestorRef"]["name"], "http", "{ancestor}");
    let accepted = ancestor["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .cloned()
        .expect("an Accepted condition");
    assert_eq!(accepted["status"], "True", "{ancestor}");
    // And the data plane has it: the listener's dump shows what its accepted sockets get.
    let listener = wait_for(
        "the listener's keepalive in the dump",
        Duration::from_secs(10),
        || {
            let dump = gw.dump("GET", "");
            dump["configs"][1]["dynamic_listeners"]
                .as_array()?
                .iter()
                .map(|l| l["active_state"]["listener"].clone())
                .find(|l| !l["tcp_keepalive"].is_null())
        },
    );
    assert_eq!(
        listener["tcp_keepalive"],
        serde_json::json!({"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5}),
        "{listener}"
    );
    assert_eq!(listener["per_connection_buffer_limit_bytes"], 32768, "{listener}");
    let out = api.kubectl(&["get", "listenerpolicy", "-n", "kgateway-system"], "");
    eprintln!("kubectl get listenerpolicy:\n{}", stdout(&out));

    for version in ["v1beta1", "v1"] {
        api.apply(&format!(
            "apiVersion: gateway.networking.k8s.io/{version}\nkind: ReferenceGrant\nmetadata:\n  name: from-routes-{version}\n  \
             namespace: httpbin\nspec:\n  from:\n  - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    \
             namespace: default\n  to:\n  - group: \"\"\n    kind: Service\n"
        ));
    }
    wait_for(
        "kgw to hold both ReferenceGrants",
        Duration::from_secs(10),
        || {
            let names = names_in_kgw(gw, "referencegrants", "httpbin");
            (names.len() == 2).then_some(())
        },
    );
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);
    // A route in `default` to the Service in `httpbin`: resolved while a grant allows it.
    api.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: across\n  namespace: default\n\
         spec:\n  parentRefs:\n  - name: http\n    namespace: kgateway-system\n  rules:\n  - backendRefs:\n    \
         - name: httpbin\n      namespace: httpbin\n      port: 8000\n",
    );
    let resolved_refs = |want: &'static str| {
        wait_for(
            &format!("the route's ResolvedRefs to be {want}"),
            Duration::from_secs(10),
            || {
                let status = status_of(api, "httproute", "default", "across")?;
                let conditions = status["parents"][0]["conditions"].as_array()?.clone();
                let c = conditions.into_iter().find(|c| c["type"] == "ResolvedRefs")?;
                (c["status"] == want).then_some(c)
            },
        )
    };
    resolved_refs("True");
    for version in ["v1beta1", "v1"] {
        let out = api.kubectl(
            &[
                "delete",
                &format!("referencegrants.{version}.gateway.networking.k8s.io"),
                "-n",
                "httpbin",
                &format!("from-routes-{version}"),
            ],
            "",
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let refused = resolved_refs("False");
    assert_eq!(refused["reason"], "RefNotPermitted", "{refused}");
}

/// The webhook rules kgw ships (deploy/kustomize/webhook.yaml, pointed at a kgw on loopback):
/// `kubectl apply` of a bad Backend or ListenerPolicy is refused with kgw's message, and a Secret
/// kgw would refuse is not sent to the webhook (the API server stores it; kgw logs it).
#[test]
fn the_shipped_webhook_rules_refuse_bad_backends_and_listener_policies_not_secrets() {
    let Some(api) = ApiServer::start() else { return };
    install_crds(&api);
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: httpbin\n");
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(&dir.path().join("pki"));
    let serving = pki.leaf("webhook", &["127.0.0.1"]);
    let webhook = format!("127.0.0.1:{}", free_port());
    let mut builder = GatewayBuilder::run(dir.path(), free_port())
        .arg("--kubernetes")
        .arg("--webhook-address")
        .arg(&webhook)
        .arg("--webhook-cert")
        .arg(serving.cert.to_str().unwrap())
        .arg("--webhook-key")
        .arg(serving.key.to_str().unwrap());
    builder
        .env
        .push(("KUBECONFIG".into(), api.kubeconfig.display().to_string()));
    let gw = builder.start();

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shipped = std::fs::read_to_string(root.join("deploy/kustomize/webhook.yaml")).unwrap();
    let mut config: serde_json::Value = serde_yaml_ng::from_str(&shipped).unwrap();
    config["webhooks"][0]["clientConfig"] = serde_json::json!({
        "url": format!("https://{webhook}/validate"),
        "caBundle": base64(&std::fs::read(&pki.ca.cert).unwrap()),
    });
    api.apply(&config.to_string());

    let backend = |host: &str| {
        format!(
            "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata:\n  name: static\n  namespace: httpbin\n\
             spec:\n  static:\n    hosts:\n    - host: \"{host}\"\n      port: 80\n"
        )
    };
    let duplicate_ports = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: ListenerPolicy\nmetadata:\n  name: ports\n  \
         namespace: httpbin\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    name: http\n  \
         perPort:\n  - port: 8080\n    listener: {perConnectionBufferLimitBytes: 1024}\n  - port: 8080\n    \
         listener: {perConnectionBufferLimitBytes: 2048}\n";
    let bad = [
        (
            backend("not a host"),
            "backends",
            "static",
            "spec.static.hosts[0].host",
        ),
        (
            duplicate_ports.to_string(),
            "listenerpolicies",
            "ports",
            "must be unique",
        ),
    ];
    for (doc, plural, name, words) in &bad {
        let refused = wait_for("the webhook to answer", Duration::from_secs(10), || {
            let out = api.kubectl(&["apply", "-f", "-"], doc);
            // until the webhook configuration is live, a bad object may still go through
            if out.status.success() {
                let _ = api.kubectl(&["delete", plural, "-n", "httpbin", name], "");
                return None;
            }
            Some(stderr(&out))
        });
        assert!(
            refused.contains("denied the request") && refused.contains(words),
            "refused by the webhook with kgw's message ({words}): {refused}"
        );
        eprintln!("kubectl apply refused: {}", refused.trim());
    }
    // A good Backend is admitted.
    api.apply(&backend("127.0.0.1"));

    // Secrets are not the webhook's: one kgw refuses is stored, and kgw logs why.
    let other = pki.leaf("other", &["other.example.com"]);
    let mismatched = pki::CertFiles {
        cert: serving.cert.clone(),
        key: other.key.clone(),
    };
    let not_a_bundle = dir.path().join("not-a-bundle.pem");
    std::fs::write(&not_a_bundle, "not a certificate\n").unwrap();
    api.apply(&pki::secret_yaml(
        "httpbin",
        "mismatched",
        &mismatched,
        Some(&not_a_bundle),
    ));
    wait_for("kgw to log the refused Secret", Duration::from_secs(10), || {
        gw.proc
            .log_text()
            .lines()
            .any(|l| l.contains("not served") && l.contains("httpbin/mismatched") && l.contains("ca.crt"))
            .then_some(())
    });
}

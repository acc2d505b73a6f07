//! The admin API on 127.0.0.1:19000. Envoy-compatible reads (`/config_dump`, `/clusters`,
//! `/stats`, `/stats/prometheus`, `/ready`) render the Snapshot the data plane is running; the
//! kubectl-shaped writes (`/apis/...`) are what `kgw apply|get|delete` call.

mod render;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use proxy::DataPlane;
use store::{Store, StoreError};
use tokio::sync::watch;

/// Largest manifest one `kgw apply` may send. Applying costs memory in proportion to the text
/// (the parsed objects, the old and new state, the rendered state file: about 10 bytes per byte
/// at the peak), so this bounds one apply's cost; 8 MiB still takes thousands of objects (a
/// 7.6 MB file of 97 Services with 1,000-endpoint EndpointSlices, or 18,000 small pairs).
/// kubectl sends one object per request (the API server takes 3 MiB); kgw sends one file.
const MAX_BODY: usize = 8 << 20;

pub struct Admin {
    pub store: Arc<Store>,
    pub data_plane: Arc<DataPlane>,
    /// The store generation the data plane serves; `apply` waits for it to catch up.
    pub served: watch::Receiver<u64>,
    /// When set, writes from other than loopback must carry `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// In Kubernetes mode: the store generation holding the first complete sync from the API
    /// server (None until then). `/ready` says LIVE only once the data plane serves it.
    pub cluster_synced: Option<watch::Receiver<Option<u64>>>,
}

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve(admin: Arc<Admin>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(Caller { peer, local }, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    let mut b: String = body.into();
    if !b.ends_with('\n') {
        b.push('\n');
    }
    reply(status, "text/plain; charset=UTF-8", b)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut b = serde_json::to_string_pretty(value).unwrap_or_default();
    b.push('\n');
    reply(status, "application/json", b)
}

/// Query parameters; a key without `=` (`?include_eds`) has an empty value.
fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Admin {
    async fn handle(&self, caller: Caller, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_string();
        let q = query(&req);
        let method = req.method().clone();
        match (method.clone(), path.as_str()) {
            (Method::GET | Method::POST, "/config_dump") => {
                let options = snapshot::DumpOptions {
                    include_eds: q.contains_key("include_eds"),
                    resource: q.get("resource").cloned(),
                    mask: q.get("mask").cloned(),
                    name_regex: q.get("name_regex").cloned(),
                    // Never over the admin API, as Envoy's.
                    reveal_private_keys: false,
                };
                let runtime = self.data_plane.runtime();
                match snapshot::config_dump(&runtime.snapshot, &options) {
                    Ok(v) => json(StatusCode::OK, &v),
                    Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
                }
            }
            (Method::GET | Method::HEAD, "/ready") => {
                let live = match &self.cluster_synced {
                    Some(synced) => synced.borrow().is_some_and(|g| *self.served.borrow() >= g),
                    None => *self.served.borrow() > 0 || self.data_plane.runtime().snapshot.version > 0,
                };
                if self.data_plane.is_draining() {
                    // As Envoy's: a draining gateway is not ready, so that a Service sends it
                    // no new traffic.
                    text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING")
                } else if live {
                    text(StatusCode::OK, "LIVE")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING")
                }
            }
            (Method::GET, "/clusters") => {
                let runtime = self.data_plane.runtime();
                if q.get("format").map(String::as_str) == Some("json") {
                    json(StatusCode::OK, &render::clusters_json(&runtime))
                } else {
                    text(StatusCode::OK, render::clusters_text(&runtime))
                }
            }
            (Method::GET, "/stats") => {
                let metrics = self.data_plane.metrics();
                match render::stats_text(&metrics, q.get("filter").map(String::as_str)) {
                    Ok(t) => text(StatusCode::OK, t),
                    Err(e) => text(StatusCode::BAD_REQUEST, e),
                }
            }
            (Method::GET, "/stats/prometheus") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                render::prometheus(&self.data_plane.metrics()),
            ),
            (Method::POST, "/apis/apply") => {
                if let Some(denied) = self.check_writer(caller, &req) {
                    return denied;
                }
                if let Some(refused) = check_manifest_type(&req) {
                    return refused;
                }
                let origin = req
                    .headers()
                    .get("x-kgw-source")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("STDIN")
                    .to_string();
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "error: cannot read {origin}: {e} (a manifest may hold at most {} MiB): \
                                 split it into several files and apply each",
                                MAX_BODY >> 20
                            ),
                        );
                    }
                };
                let Ok(manifest) = String::from_utf8(Vec::from(body)) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("error: {origin} is not UTF-8 text"),
                    );
                };
                // Parsing and validating take CPU in proportion to the manifest: done on the
                // control-plane thread, one apply at a time, so the workers that carry traffic
                // never parse and concurrent applies cannot take every core.
                let store = self.store.clone();
                let outcome = control_plane_work(move || {
                    let outcome = store.apply(&manifest, &origin);
                    drop(manifest);
                    outcome
                })
                .await;
                match outcome {
                    Ok(applied) => {
                        self.wait_served().await;
                        let lines: Vec<String> = applied
                            .iter()
                            .map(|a| format!("{}/{} {}", a.key.kind.resource(), a.key.name, a.action))
                            .collect();
                        text(StatusCode::OK, lines.join("\n"))
                    }
                    Err(e) => store_error(e),
                }
            }
            (_, p) if p.starts_with("/apis/") => self.resource(caller, req, &q).await,
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; admin endpoints: /config_dump /clusters /stats /stats/prometheus /ready",
            ),
        }
    }

    /// `GET|DELETE /apis/{kind}[/{namespace}/{name}]`.
    async fn resource(&self, caller: Caller, req: Request<Incoming>, q: &HashMap<String, String>) -> Reply {
        let parts: Vec<String> = req
            .uri()
            .path()
            .trim_start_matches("/apis/")
            .split('/')
            .map(percent_decode)
            .collect();
        let Some(kind) = api::Kind::from_cli(&parts[0]) else {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "error: the server doesn't have a resource type \"{}\" (kgw knows {})",
                    parts[0],
                    api::Kind::ALL
                        .iter()
                        .map(|k| k.resource().split('.').next().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        };
        // Cluster-scoped kinds: `/apis/{kind}//{name}`, their namespace is "".
        let namespace = if kind.is_namespaced() {
            parts
                .get(1)
                .filter(|s| !s.is_empty())
                .cloned()
                .or_else(|| q.get("namespace").cloned())
        } else {
            Some(String::new())
        };
        let name = parts.get(2).filter(|s| !s.is_empty()).cloned();
        match *req.method() {
            Method::GET => {
                let items = self.store.get(kind, namespace.as_deref(), name.as_deref());
                if let Some(n) = &name
                    && items.is_empty()
                {
                    let key = api::ObjectKey {
                        kind,
                        namespace: namespace.unwrap_or_default(),
                        name: n.clone(),
                    };
                    return text(
                        StatusCode::NOT_FOUND,
                        format!("Error from server (NotFound): {}", store::not_found(&key)),
                    );
                }
                json(
                    StatusCode::OK,
                    &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
                )
            }
            Method::DELETE => {
                if let Some(denied) = self.check_writer(caller, &req) {
                    return denied;
                }
                let (Some(namespace), Some(name)) = (namespace, name) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "error: delete needs a namespace and a name",
                    );
                };
                let key = api::ObjectKey {
                    kind,
                    namespace,
                    name,
                };
                let store = self.store.clone();
                let deleting = key.clone();
                // Saving the state writes and syncs a file: not on a traffic worker.
                match control_plane_work(move || store.delete(&deleting)).await {
                    Ok(()) => {
                        self.wait_served().await;
                        text(
                            StatusCode::OK,
                            format!("{} \"{}\" deleted", kind.resource(), key.name),
                        )
                    }
                    Err(e) => store_error(e),
                }
            }
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or DELETE"),
        }
    }

    /// Writes come from loopback, or carry the configured token; and never from a web page
    /// (see `check_browser`).
    fn check_writer(&self, caller: Caller, req: &Request<Incoming>) -> Option<Reply> {
        if self.cluster_synced.is_some() {
            // Kubernetes mode: the API server is the only source. An object applied here would
            // shadow the cluster's until a restart, and no other replica would see it.
            return Some(text(
                StatusCode::CONFLICT,
                "error: this gateway runs in Kubernetes mode (kgw run --kubernetes), where the API \
                 server is its only source: use kubectl apply or kubectl delete",
            ));
        }
        let peer = caller.peer;
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // The token is a secret no web page has: a caller with it may use any host name.
        let has_token = matches!((&self.token, bearer), (Some(t), Some(b)) if t == b);
        if !has_token && let Some(refused) = check_browser(caller.local, req) {
            return Some(refused);
        }
        match (&self.token, bearer) {
            (Some(t), Some(b)) if t == b => None,
            (Some(_), _) => Some(text(
                StatusCode::UNAUTHORIZED,
                "error: a valid admin token is required",
            )),
            (None, _) if peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback() => None,
            (None, _) => Some(text(
                StatusCode::FORBIDDEN,
                "error: writes are only accepted from loopback; start kgw run with --admin-token to allow others",
            )),
        }
    }

    /// Waits (bounded) until the data plane serves what the store now holds.
    async fn wait_served(&self) {
        let target = *self.store.subscribe().borrow();
        let mut served = self.served.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), served.wait_for(|g| *g >= target)).await;
    }
}

/// Who called: the client's address and the address it reached.
#[derive(Clone, Copy)]
struct Caller {
    peer: SocketAddr,
    local: SocketAddr,
}

/// A job for the control-plane thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on the control-plane thread, after the jobs queued before it: one long-lived
/// thread parses, saves and translates, one job at a time, never a worker that carries traffic
/// (parsing a large manifest takes a core for a while). One thread, not tokio's blocking pool
/// or `block_in_place`: those threads come and go, each new one can take another malloc arena,
/// and the memory a large apply freed was not reused by the next one (RSS grew by each
/// apply/delete cycle). None when the job panicked or the thread cannot run.
pub async fn on_control_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static JOBS: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kgw-control".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // A panic fails this job only; the thread serves the next ones.
        if let Ok(outcome) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            let _ = done_tx.send(outcome);
        }
    });
    if jobs.as_ref().is_none_or(|tx| tx.send(job).is_err()) {
        return None;
    }
    done_rx.await.ok()
}

/// An apply or delete on the control-plane thread.
async fn control_plane_work<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    on_control_thread(work).await.unwrap_or_else(|| {
        Err(StoreError::Invalid(
            "error: the request failed inside kgw (see its log); nothing was changed; please report it"
                .into(),
        ))
    })
}

/// A web page can make a browser send a "simple" cross-site POST (text/plain, form types, or
/// no type at all) without asking first; a YAML or JSON type makes the browser ask (a CORS
/// preflight, which this API never grants). So a manifest must say it is YAML or JSON.
fn check_manifest_type(req: &Request<Incoming>) -> Option<Reply> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let accepted = matches!(
        essence.as_str(),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" | "application/json"
    ) || essence.ends_with("+yaml")
        || essence.ends_with("+json");
    if accepted {
        return None;
    }
    let shown = if content_type.is_empty() {
        "none".to_string()
    } else {
        format!("{content_type:?}")
    };
    Some(text(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "error: /apis/apply takes a manifest with Content-Type application/yaml or application/json \
             (got {shown}); with curl add -H 'Content-Type: application/yaml'"
        ),
    ))
}

/// Refuses a write whose Host is not this admin's own (a DNS-rebinding page sends its own name)
/// or whose Origin is another site's. Accepted hosts: localhost, 127.0.0.1, [::1], the address
/// the client connected to; with or without a port. curl and `kgw` send no Origin.
fn check_browser(local: SocketAddr, req: &Request<Incoming>) -> Option<Reply> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !own_authority(host, local, false) {
        return Some(text(
            StatusCode::FORBIDDEN,
            format!(
                "error: admin writes need the Host header to name this admin (localhost, 127.0.0.1, [::1] or {}), \
                 got {host:?}: a web page must not write configuration",
                local.ip()
            ),
        ));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|authority| own_authority(authority, local, true));
        if !own {
            return Some(text(
                StatusCode::FORBIDDEN,
                format!(
                    "error: admin writes are refused from the web origin {origin:?}: only this admin's own \
                     origin (http://{local}) may write; send the request without an Origin header (as curl and kgw do)"
                ),
            ));
        }
    }
    None
}

/// Whether `authority` (`host[:port]`) names this admin. With `same_port`, a port must be the
/// admin's (an Origin is a site: another port on loopback is another site).
fn own_authority(authority: &str, local: SocketAddr, same_port: bool) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let port_ok = match port {
        Some(p) => p.parse::<u16>().is_ok_and(|p| !same_port || p == local.port()),
        None => !same_port || local.port() == 80,
    };
    let host = host.to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = bare == "localhost"
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            ip.is_loopback() || ip == local.ip() || ip.to_canonical() == local.ip().to_canonical()
        });
    port_ok && host_ok
}

fn store_error(e: StoreError) -> Reply {
    match e {
        StoreError::Invalid(m) => text(StatusCode::UNPROCESSABLE_ENTITY, m),
        StoreError::NotFound(m) => text(
            StatusCode::NOT_FOUND,
            format!("Error from server (NotFound): {m}"),
        ),
        StoreError::Conflict(m) => text(StatusCode::CONFLICT, format!("Error from server (Conflict): {m}")),
        e @ StoreError::Persist { .. } => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

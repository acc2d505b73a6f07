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

/// Largest manifest `kgw apply` may send.
const MAX_BODY: usize = 16 << 20;

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
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(peer, req).await) }
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
    async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Reply {
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
                if live {
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
                if let Some(denied) = self.check_writer(peer, &req) {
                    return denied;
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
                            format!("cannot read the manifest: {e}"),
                        );
                    }
                };
                let Ok(manifest) = std::str::from_utf8(&body) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("error: {origin} is not UTF-8 text"),
                    );
                };
                match self.store.apply(manifest, &origin) {
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
            (_, p) if p.starts_with("/apis/") => self.resource(peer, req, &q).await,
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; admin endpoints: /config_dump /clusters /stats /stats/prometheus /ready",
            ),
        }
    }

    /// `GET|DELETE /apis/{kind}[/{namespace}/{name}]`.
    async fn resource(&self, peer: SocketAddr, req: Request<Incoming>, q: &HashMap<String, String>) -> Reply {
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
                    "error: the server doesn't have a resource type \"{}\" (kgw knows gateways, httproutes, \
                     services, endpointslices, backendconfigpolicies)",
                    parts[0]
                ),
            );
        };
        let namespace = parts
            .get(1)
            .filter(|s| !s.is_empty())
            .cloned()
            .or_else(|| q.get("namespace").cloned());
        let name = parts.get(2).filter(|s| !s.is_empty()).cloned();
        match *req.method() {
            Method::GET => {
                let items = self.store.get(kind, namespace.as_deref(), name.as_deref());
                if let Some(n) = &name
                    && items.is_empty()
                {
                    return text(
                        StatusCode::NOT_FOUND,
                        format!(
                            "Error from server (NotFound): {} \"{n}\" not found in namespace \"{}\"",
                            kind.resource(),
                            namespace.unwrap_or_default()
                        ),
                    );
                }
                json(
                    StatusCode::OK,
                    &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
                )
            }
            Method::DELETE => {
                if let Some(denied) = self.check_writer(peer, &req) {
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
                match self.store.delete(&key) {
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

    /// Writes come from loopback, or carry the configured token.
    fn check_writer(&self, peer: SocketAddr, req: &Request<Incoming>) -> Option<Reply> {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
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

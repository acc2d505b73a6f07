//! A small httpbin-compatible backend for the quickstart and the tests, so the guides work with
//! nothing else installed: `/get`, `/headers`, `/status/{code}`, `/delay/{seconds}`,
//! `/anything[/...]`, `/ip`. Responses have httpbin's JSON shapes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};

/// Binds and serves in the background; returns the bound address.
pub async fn start(address: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(move |req| async move { Ok::<_, Infallible>(respond(req, peer).await) });
                // HTTP/1.1, or HTTP/2 with prior knowledge (h2c): a Service whose port says
                // `appProtocol: kubernetes.io/h2c` (the HTTP/2 keepalive guide) is served too.
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new());
                builder.http2().timer(TokioTimer::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(bound)
}

pub async fn serve_forever(address: SocketAddr) -> anyhow::Result<()> {
    let bound = start(address).await?;
    println!("sample httpbin backend on http://{bound}");
    std::future::pending::<()>().await;
    Ok(())
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_default();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Header names as httpbin shows them: `X-Forwarded-For`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn headers_of(req: &http::request::Parts) -> Value {
    let mut map = Map::new();
    // Several lines of one name show as one value, joined with `,` (as httpbin shows them).
    for name in req.headers.keys() {
        let values: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        map.insert(title_case(name.as_str()), Value::String(values.join(",")));
    }
    Value::Object(map)
}

fn args_of(req: &http::request::Parts) -> Value {
    let mut map = Map::new();
    for pair in req.uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Value::Object(map)
}

async fn respond(req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let url = format!(
        "http://{host}{}",
        parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let origin = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|| peer.ip().to_string());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["headers"] => json_reply(StatusCode::OK, &json!({ "headers": headers_of(&parts) })),
        // httpbin's: each query parameter becomes a response header line.
        ["response-headers"] => {
            let mut r = json_reply(StatusCode::OK, &args_of(&parts));
            for pair in parts.uri.query().unwrap_or("").split('&') {
                if let Some((k, v)) = pair.split_once('=')
                    && let (Ok(k), Ok(v)) = (
                        header::HeaderName::from_bytes(k.as_bytes()),
                        header::HeaderValue::from_str(v),
                    )
                {
                    r.headers_mut().append(k, v);
                }
            }
            r
        }
        ["ip"] => json_reply(StatusCode::OK, &json!({ "origin": origin })),
        ["get"] => json_reply(
            StatusCode::OK,
            &json!({"args": args_of(&parts), "headers": headers_of(&parts), "origin": origin, "url": url}),
        ),
        ["status", code] => match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = status;
                r
            }
            None => json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("invalid status code {code}")}),
            ),
        },
        ["delay", secs] => {
            let secs: f64 = secs.parse().unwrap_or(0.0);
            // httpbin caps the delay at 10 s; ours allows 60 s so fault tests can hold a request open.
            tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 60.0))).await;
            json_reply(
                StatusCode::OK,
                &json!({"args": args_of(&parts), "headers": headers_of(&parts), "origin": origin, "url": url}),
            )
        }
        ["anything", ..] => {
            let data = match Limited::new(body, 1 << 20).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            json_reply(
                StatusCode::OK,
                &json!({
                    "args": args_of(&parts), "data": data, "headers": headers_of(&parts),
                    "method": parts.method.as_str(), "origin": origin, "url": url,
                }),
            )
        }
        [""] => json_reply(
            StatusCode::OK,
            &json!({"service": "kgw sample backend (httpbin-compatible)",
                    "endpoints": ["/get", "/headers", "/ip", "/status/{code}", "/delay/{seconds}", "/anything", "/response-headers"]}),
        ),
        _ => json_reply(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

//! An HTTP/2 client's stream to an HTTP/2 upstream (`upstream_h2.rs`, kgateway's
//! `appProtocol: kubernetes.io/h2c`, `http2`, `grpc`): the stream's head goes as the upstream
//! stream's head with the proxy's edits (x-forwarded-for, x-forwarded-proto; no
//! connection-specific header; `te: trailers` kept, gRPC needs it), and the two bodies move
//! at once, each way as it comes, DATA under each peer's flow control and trailers intact
//! (gRPC's status is in them), so that streaming calls (client, server, bidirectional) work.
//! Timeouts: the route timeout from the end of the request to the end of the response; the stream
//! idle timeout when neither direction moved a byte for that long (as Envoy's, one timer for
//! the stream).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Uri};

use crate::DataPlane;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::h2_body;
use crate::h2_to_h1::{Ended, StreamRequest, max_stream_duration_reached, within_max_stream_duration};
use crate::http_protocol::HttpOptions;
use crate::local_reply::{LocalReply, ResponseFlag};
use crate::outlier_detection::Report;
use crate::stats;
use crate::upstream_h2::{self, UpstreamStream};

/// Proxies the stream to `endpoint` over HTTP/2, within the cluster's maxStreamDuration. Err:
/// a failure before the response head, for the caller to answer locally.
pub(crate) async fn exchange(
    dp: &DataPlane,
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    request: &StreamRequest<'_>,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
) -> Result<Ended, LocalReply> {
    let options = HttpOptions::of(&cluster.policy_ref());
    let status = AtomicU16::new(0);
    let run = run(dp, cluster, endpoint, request, body, respond, &status);
    match within_max_stream_duration(&options, run).await {
        Some(result) => result,
        None => max_stream_duration_reached(cluster, status.load(Ordering::Relaxed), respond),
    }
}

async fn run(
    dp: &DataPlane,
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    request: &StreamRequest<'_>,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
    response_status: &AtomicU16,
) -> Result<Ended, LocalReply> {
    let route_timeout = request.route_timeout;
    let upstream_scheme = if cluster.tls.client().is_some() {
        "https"
    } else {
        "http"
    };
    let mut head = upstream_request(request, upstream_scheme).ok_or_else(LocalReply::bad_request_body)?;
    request.route_filters.edit_h2_request(&mut head);
    let end_of_stream = body.is_end_stream();
    let opened = tokio::select! {
        biased;
        s = upstream_h2::open_stream(cluster, endpoint, head, end_of_stream, route_timeout, request.proxied) => s?,
        () = client_reset(respond) => return Ok(client_left()),
    };
    let UpstreamStream {
        response,
        body: mut upstream_body,
        lease,
    } = opened;
    let activity = Activity::new(dp.options.stream_idle_timeout);
    let upload = upload(body, &mut upstream_body, &activity, end_of_stream);
    let deadline = tokio::time::sleep(route_timeout);
    tokio::pin!(response, upload, deadline);
    let mut uploaded = end_of_stream;
    // The response head, the request going up meanwhile.
    let response = loop {
        tokio::select! {
            biased;
            r = &mut response => break r,
            u = &mut upload, if !uploaded => {
                uploaded = true;
                deadline.as_mut().reset(tokio::time::Instant::now() + route_timeout);
                match u {
                    Ok(()) | Err(Upload::UpstreamGone) => {}
                    Err(Upload::ClientGone) => return Ok(client_left()),
                    Err(Upload::Idle) => return Err(LocalReply::stream_timeout_in_request()),
                }
            }
            () = &mut deadline, if uploaded => {
                cluster.outlier.report(cluster, endpoint, Report::Timeout);
                return Err(LocalReply::upstream_timeout());
            }
            () = client_reset(respond) => return Ok(client_left()),
        }
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            cluster.outlier.report(cluster, endpoint, Report::ConnectFailed);
            return Err(lease.failed(cluster, &e));
        }
    };
    let status = response.status().as_u16();
    cluster.outlier.report(cluster, endpoint, Report::Status(status));
    let (parts, mut upstream_response) = response.into_parts();
    let mut head = http::Response::new(());
    *head.status_mut() = parts.status;
    *head.headers_mut() = response_headers(parts.headers, request.set_cookies);
    request.route_filters.edit_h2_response(head.headers_mut());
    response_status.store(status, Ordering::Relaxed);
    let mut ended = Ended { status, flag: None };
    let mut client_body = match respond.send_response(head, upstream_response.is_end_stream()) {
        Ok(send) => send,
        Err(_) => {
            ended.flag = Some(ResponseFlag::DownstreamConnectionTermination);
            return Ok(ended);
        }
    };
    if upstream_response.is_end_stream() {
        // Headers only (a gRPC trailers-only answer, a 204): the stream is done.
        drop(lease);
        return Ok(ended);
    }
    // The response body, the request still going up when it had not ended (streaming calls).
    let downloaded = {
        let download = download(&mut upstream_response, &mut client_body, &activity);
        tokio::pin!(download);
        loop {
            tokio::select! {
                biased;
                d = &mut download => break d,
                u = &mut upload, if !uploaded => {
                    uploaded = true;
                    deadline.as_mut().reset(tokio::time::Instant::now() + route_timeout);
                    if let Err(Upload::ClientGone) = u {
                        ended.flag = Some(ResponseFlag::DownstreamConnectionTermination);
                        return Ok(ended);
                    }
                }
                () = &mut deadline, if uploaded => break Err(Download::RouteTimeout),
            }
        }
    };
    match downloaded {
        Ok(()) => {}
        Err(Download::UpstreamGone) => {
            client_body.send_reset(Reason::INTERNAL_ERROR);
            ended.flag = Some(ResponseFlag::UpstreamConnectionTermination);
        }
        Err(Download::ClientGone) => ended.flag = Some(ResponseFlag::DownstreamConnectionTermination),
        // Envoy's route timeout spans the whole response: one still coming is reset
        // (RST_STREAM INTERNAL_ERROR to the client), counted as a timeout, `UT`.
        Err(Download::RouteTimeout) => {
            stats::inc(&cluster.stats().upstream_rq_timeout);
            cluster.outlier.report(cluster, endpoint, Report::Timeout);
            client_body.send_reset(Reason::INTERNAL_ERROR);
            ended.flag = Some(ResponseFlag::UpstreamRequestTimeout);
        }
        Err(Download::Idle) => {
            stats::inc(&dp.downstream.downstream_rq_idle_timeout);
            client_body.send_reset(Reason::CANCEL);
            ended.flag = Some(ResponseFlag::StreamIdleTimeout);
        }
    }
    // The upstream stream (and its slot) ends here: reset if either side is still open.
    drop(lease);
    Ok(ended)
}

fn client_left() -> Ended {
    Ended {
        status: 0,
        flag: Some(ResponseFlag::DownstreamConnectionTermination),
    }
}

/// Resolves when the client resets the stream (or its connection fails).
async fn client_reset(respond: &mut SendResponse<Bytes>) {
    let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
}

/// Headers that describe one connection (RFC 9113, 8.2.2), or that the proxy writes itself.
fn is_dropped(name: &str, value: &HeaderValue) -> bool {
    match name {
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "host"
        | "x-forwarded-proto" | "x-forwarded-for" => true,
        // Only `te: trailers` is allowed in HTTP/2, and gRPC requires it.
        "te" => !value.as_bytes().eq_ignore_ascii_case(b"trailers"),
        _ => false,
    }
}

/// The upstream stream's head: the client's method, `:authority` and path, the upstream's
/// scheme, the client's headers with the proxy's edits. None when the parts do not make a URI.
fn upstream_request(request: &StreamRequest<'_>, scheme: &str) -> Option<Request<()>> {
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(if request.authority.is_empty() {
            "localhost"
        } else {
            request.authority
        })
        .path_and_query(request.path_and_query)
        .build()
        .ok()?;
    let mut head = Request::new(());
    *head.method_mut() = request.parts.method.clone();
    *head.uri_mut() = uri;
    let headers = head.headers_mut();
    let mut forwarded_for = Vec::new();
    for (name, value) in request.parts.headers.iter() {
        if name == "x-forwarded-for" {
            forwarded_for.extend_from_slice(value.as_bytes().trim_ascii());
            forwarded_for.extend_from_slice(b", ");
        }
        if !is_dropped(name.as_str(), value) {
            headers.append(name.clone(), value.clone());
        }
    }
    // Every x-forwarded-for value joins one, the client's address last.
    forwarded_for.extend_from_slice(request.client.as_bytes());
    headers.insert("x-forwarded-for", HeaderValue::from_bytes(&forwarded_for).ok()?);
    headers.insert("x-forwarded-proto", HeaderValue::from_static(request.scheme));
    Some(head)
}

/// The upstream's response headers for the client: those HTTP/2 allows, and the generated
/// cookies.
fn response_headers(mut headers: HeaderMap, set_cookies: &[String]) -> HeaderMap {
    let dropped: Vec<_> = headers
        .iter()
        .filter(|(name, value)| is_dropped(name.as_str(), value) && *name != "x-forwarded-for")
        .map(|(name, _)| name.clone())
        .collect();
    for name in dropped {
        headers.remove(&name);
    }
    for cookie in set_cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(http::header::SET_COOKIE, value);
        }
    }
    headers
}

/// When the stream last moved a byte either way: one stream idle timeout for both directions,
/// as Envoy's (a streaming call that is quiet one way while the other moves is not idle).
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
    limit: Duration,
}

impl Activity {
    fn new(limit: Duration) -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            limit,
        }
    }

    fn due(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + self.limit
    }

    /// Runs `io` to its end (a byte moved: the stream is not idle); None when the stream idled
    /// first.
    async fn within<T>(&self, io: impl Future<Output = T>) -> Option<T> {
        let mut io = std::pin::pin!(io);
        loop {
            let due = self.due();
            match tokio::time::timeout_at(due, io.as_mut()).await {
                Ok(out) => {
                    let ms = self.start.elapsed().as_millis() as u64;
                    self.last_ms.fetch_max(ms, Ordering::Relaxed);
                    return Some(out);
                }
                // The other direction may have moved meanwhile.
                Err(_) if self.due() > tokio::time::Instant::now() => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Why the upload ended early.
enum Upload {
    ClientGone,
    UpstreamGone,
    Idle,
}

/// The client's body and trailers up to the upstream.
async fn upload(
    from: &mut RecvStream,
    to: &mut SendStream<Bytes>,
    activity: &Activity,
    ended: bool,
) -> Result<(), Upload> {
    if ended {
        return Ok(());
    }
    relay(from, to, activity, false).await.map_err(|stop| match stop {
        Stop::ReadFailed => Upload::ClientGone,
        Stop::WriteFailed => Upload::UpstreamGone,
        Stop::Idle => Upload::Idle,
    })
}

/// Why the response body stopped part-way.
enum Download {
    ClientGone,
    UpstreamGone,
    Idle,
    /// The route timeout ran out first (set by the caller, which holds the deadline).
    RouteTimeout,
}

/// The upstream's body and trailers (gRPC's status) down to the client. A client that resets
/// the stream ends the upstream one at once (as Envoy cancels it).
async fn download(
    from: &mut RecvStream,
    to: &mut SendStream<Bytes>,
    activity: &Activity,
) -> Result<(), Download> {
    relay(from, to, activity, true).await.map_err(|stop| match stop {
        Stop::ReadFailed => Download::UpstreamGone,
        Stop::WriteFailed => Download::ClientGone,
        Stop::Idle => Download::Idle,
    })
}

/// Why a body's relay stopped part-way: the stream it reads failed, the stream it writes failed
/// (or, when watched, was reset by its peer), or neither moved within the stream idle timeout.
enum Stop {
    ReadFailed,
    WriteFailed,
    Idle,
}

/// One direction of the stream, `from` to `to`: its DATA under flow control, then its trailers
/// (or the end of the stream). With `watch_reset`, a reset of `to` by its peer stops it at once
/// rather than at the next write.
async fn relay(
    from: &mut RecvStream,
    to: &mut SendStream<Bytes>,
    activity: &Activity,
    watch_reset: bool,
) -> Result<(), Stop> {
    loop {
        let next = tokio::select! {
            biased;
            next = activity.within(h2_body::recv_data(from)) => next,
            () = reset_by_peer(to, watch_reset) => return Err(Stop::WriteFailed),
        };
        let Some(next) = next.ok_or(Stop::Idle)? else {
            break;
        };
        let data = next.map_err(|_| Stop::ReadFailed)?;
        let end = from.is_end_stream();
        activity
            .within(h2_body::send_data(to, data, end))
            .await
            .ok_or(Stop::Idle)?
            .map_err(|_| Stop::WriteFailed)?;
        if end {
            return Ok(());
        }
    }
    let trailers = activity
        .within(h2_body::trailers(from))
        .await
        .ok_or(Stop::Idle)?
        .map_err(|_| Stop::ReadFailed)?;
    match trailers {
        Some(trailers) => to.send_trailers(trailers),
        None => to.send_data(Bytes::new(), true),
    }
    .map_err(|_| Stop::WriteFailed)
}

/// Resolves when `to`'s peer resets it (or its connection fails), if `watch`; never otherwise.
async fn reset_by_peer(to: &mut SendStream<Bytes>, watch: bool) {
    if watch {
        let _ = std::future::poll_fn(|cx| to.poll_reset(cx)).await;
    } else {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_head_keeps_te_trailers_and_gets_the_proxys_edits() {
        let parts = http::Request::post("http://www.example.com/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("connection", "close")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let request = StreamRequest {
            parts: &parts,
            authority: "www.example.com",
            path_and_query: "/pkg.Svc/Call",
            client: "10.0.0.1",
            scheme: "http",
            proxied: None,
            set_cookies: &[],
            route_filters: &Default::default(),
            route_timeout: Duration::from_secs(15),
        };
        let head = upstream_request(&request, "http").unwrap();
        assert_eq!(head.uri().to_string(), "http://www.example.com/pkg.Svc/Call");
        assert_eq!(head.method(), http::Method::POST);
        let headers = head.headers();
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(headers.get("connection").is_none());

        let mut response = HeaderMap::new();
        response.insert("content-type", HeaderValue::from_static("application/grpc"));
        response.insert("connection", HeaderValue::from_static("close"));
        let out = response_headers(response, &["lb=1".to_string()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out["set-cookie"], "lb=1");
    }
}

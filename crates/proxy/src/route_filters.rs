//! HTTPRoute filters on the wire (`snapshot::RouteFilters` says what they are): a redirect is
//! answered locally (`redirect`); the picked route's and backend's edits (`Picked`) change the
//! request head before it goes upstream and the response head before it goes to the client, on
//! every path: an HTTP/1.1 head as the proxy wrote it (`edit_http1_*`), an HTTP/2 one as a
//! header map (`edit_h2_*`). Nothing is done, nor allocated, for a route without filters.

use std::sync::Arc;

use snapshot::{Route, RouteFilters, WeightedCluster};

use crate::local_reply::LocalReply;
use crate::router::RequestView;

/// One `name: value` line of an HTTP/1.1 head.
type HeaderLine = (Vec<u8>, Vec<u8>);

/// The proxy's own framing headers: no filter edit reaches them (the codecs write them).
/// Not `snapshot::CONNECTION_SPECIFIC_HEADERS`, on purpose: that list is what `kgw apply`
/// refuses in a filter (an HTTP/2 head cannot carry it); this one guards the lines the codec
/// framed the message with, `content-length` too, whatever the filter says.
const FRAMING: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

fn is_framing(name: &[u8]) -> bool {
    FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
}

/// The route's RequestRedirect, as Envoy's `redirect` action answers it: the status, a
/// Location built from the request, no body.
pub(crate) fn redirect(route: &Route, view: &RequestView<'_>) -> Option<LocalReply> {
    let redirect = route.filters.as_ref()?.redirect.as_ref()?;
    let query = (!view.query.is_empty()).then_some(view.query);
    let location = redirect.location(view.scheme, view.host, view.path, query);
    Some(LocalReply::redirect(redirect.status, location))
}

/// The filters of the route a request took and of the backend it was sent to.
#[derive(Default, Clone)]
pub(crate) struct Picked {
    route: Option<Arc<RouteFilters>>,
    backend: Option<Arc<RouteFilters>>,
    /// The CORS headers of this request's response (`cors.rs`).
    pub cors: Option<Arc<RouteFilters>>,
}

impl Picked {
    pub(crate) fn of(route: &Route, target: &WeightedCluster) -> Picked {
        Picked {
            route: route.filters.clone(),
            backend: target.filters.clone(),
            cors: None,
        }
    }

    /// The route's own filters, for a reply it gives before a backend is picked.
    pub(crate) fn of_route(route: &Route) -> Picked {
        Picked {
            route: route.filters.clone(),
            backend: None,
            cors: None,
        }
    }

    /// Most specific first, as Envoy applies them: the backend's edits, then the route's (which
    /// win where both set one header).
    fn each(&self) -> impl Iterator<Item = &RouteFilters> {
        self.backend
            .iter()
            .chain(self.route.iter())
            .chain(self.cors.iter())
            .map(|f| &**f)
    }

    fn edits_request(&self) -> bool {
        self.each().any(RouteFilters::edits_request)
    }

    fn edits_response(&self) -> bool {
        self.each().any(|f| !f.response_headers.is_empty())
    }

    /// Rewrites an HTTP/1.1 request head (`METHOD target VERSION`, `name: value` lines, the
    /// empty line: as `h1::write_request_head` wrote it) with the URLRewrite and the request
    /// header edits.
    pub(crate) fn edit_http1_request(&self, head: &mut Vec<u8>) {
        if !self.edits_request() {
            return;
        }
        let Some((start, mut lines)) = split_head(head) else {
            return;
        };
        let mut start = start.to_vec();
        for f in self.each() {
            if let Some(rewrite) = &f.path_rewrite {
                start = rewrite_request_line(&start, rewrite);
            }
            if let Some(host) = &f.host_rewrite {
                lines.retain(|(n, _)| !n.eq_ignore_ascii_case(b"host"));
                lines.insert(0, (b"host".to_vec(), host.as_bytes().to_vec()));
            }
            apply_edits(&f.request_headers, &mut lines);
        }
        *head = join_head(&start, &lines);
    }

    /// Rewrites an HTTP/1.1 response head (status line, `name: value` lines, the empty line)
    /// with the response header edits.
    pub(crate) fn edit_http1_response(&self, head: &mut Vec<u8>) {
        if !self.edits_response() {
            return;
        }
        let Some((start, mut lines)) = split_head(head) else {
            return;
        };
        let start = start.to_vec();
        for f in self.each() {
            apply_edits(&f.response_headers, &mut lines);
        }
        *head = join_head(&start, &lines);
    }

    /// The URLRewrite and the request header edits on an HTTP/2 request.
    pub(crate) fn edit_h2_request<B>(&self, request: &mut http::Request<B>) {
        if !self.edits_request() {
            return;
        }
        for f in self.each() {
            if f.path_rewrite.is_some() || f.host_rewrite.is_some() {
                let uri = request.uri().clone();
                let mut parts = uri.into_parts();
                if let Some(rewrite) = &f.path_rewrite
                    && let Some(pq) = &parts.path_and_query
                {
                    let path = rewrite.apply(pq.path());
                    let new = match pq.query() {
                        Some(q) => format!("{path}?{q}"),
                        None => path,
                    };
                    if let Ok(pq) = new.parse() {
                        parts.path_and_query = Some(pq);
                    }
                }
                if let Some(host) = &f.host_rewrite
                    && parts.scheme.is_some()
                    && let Ok(authority) = host.parse()
                {
                    parts.authority = Some(authority);
                }
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
                if let Some(host) = &f.host_rewrite
                    && let Ok(value) = http::HeaderValue::from_str(host)
                    && request.headers().contains_key(http::header::HOST)
                {
                    request.headers_mut().insert(http::header::HOST, value);
                }
            }
            edit_map(&f.request_headers, request.headers_mut());
        }
    }

    /// The response header edits on an HTTP/2 (or to-be-HTTP/1.1) response's header map.
    pub(crate) fn edit_h2_response(&self, headers: &mut http::HeaderMap) {
        if !self.edits_response() {
            return;
        }
        for f in self.each() {
            edit_map(&f.response_headers, headers);
        }
    }
}

fn apply_edits(edits: &snapshot::HeaderEdits, lines: &mut Vec<HeaderLine>) {
    if edits.is_empty() {
        return;
    }
    let (framing, mut rest): (Vec<_>, Vec<_>) = std::mem::take(lines)
        .into_iter()
        .partition(|(n, _)| is_framing(n));
    edits.apply(&mut rest);
    rest.retain(|(n, _)| !is_framing(n));
    *lines = rest;
    lines.extend(framing);
}

fn edit_map(edits: &snapshot::HeaderEdits, headers: &mut http::HeaderMap) {
    if edits.is_empty() {
        return;
    }
    let kept: Vec<(http::HeaderName, http::HeaderValue)> = FRAMING
        .iter()
        .flat_map(|n| {
            headers
                .get_all(*n)
                .iter()
                .map(|v| (http::HeaderName::from_static(n), v.clone()))
        })
        .collect();
    edits.apply_to_map(headers);
    for n in FRAMING {
        headers.remove(n);
    }
    for (n, v) in kept {
        headers.append(n, v);
    }
}

/// `start line`, then `name: value` pairs, of a head the proxy wrote (CRLF lines, an empty
/// line at the end).
fn split_head(head: &[u8]) -> Option<(&[u8], Vec<HeaderLine>)> {
    let body = head.strip_suffix(b"\r\n\r\n")?;
    let mut lines = body
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next()?;
    let headers = lines
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            Some((l[..colon].to_vec(), l[colon + 1..].trim_ascii().to_vec()))
        })
        .collect();
    Some((start, headers))
}

fn join_head(start: &[u8], lines: &[HeaderLine]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        start.len() + 2 + lines.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>() + 2,
    );
    out.extend_from_slice(start);
    out.extend_from_slice(b"\r\n");
    for (name, value) in lines {
        crate::h1::put_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `METHOD /path?query VERSION` with the path rewritten (the query stays), on the raw bytes:
/// a target byte that is not UTF-8 goes upstream as the client sent it.
fn rewrite_request_line(line: &[u8], rewrite: &snapshot::PathRewrite) -> Vec<u8> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return line.to_vec();
    };
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, &[][..]),
    };
    [method, b" ", &rewrite.apply_to_bytes(path), query, b" ", version].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot::{HeaderEdits, PathRewrite};

    fn name(n: &str) -> http::HeaderName {
        http::HeaderName::from_bytes(n.as_bytes()).unwrap()
    }

    fn value(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).unwrap()
    }

    fn picked(route: RouteFilters) -> Picked {
        Picked {
            route: Some(Arc::new(route)),
            backend: None,
            cors: None,
        }
    }

    #[test]
    fn an_http1_request_head_gets_set_add_remove_and_the_rewrites() {
        let filters = RouteFilters {
            request_headers: HeaderEdits {
                set: vec![(name("x-header-set"), value("set"))],
                add: vec![(name("x-header-add"), value("added"))],
                remove: vec![name("x-header-remove"), name("content-length")],
            },
            host_rewrite: Some("one.example.org".into()),
            path_rewrite: Some(PathRewrite::Prefix {
                matched: "/prefix/one".into(),
                with: "/one".into(),
            }),
            ..RouteFilters::default()
        };
        let mut head = b"GET /prefix/one/two?q=1 HTTP/1.1\r\nhost: gw\r\nX-Header-Set: old\r\n\
            x-header-add: first\r\nX-HEADER-REMOVE: gone\r\ncontent-length: 0\r\n\r\n"
            .to_vec();
        picked(filters).edit_http1_request(&mut head);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /one/two?q=1 HTTP/1.1\r\nhost: one.example.org\r\nx-header-add: first\r\n\
             x-header-set: set\r\nx-header-add: added\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_rewritten_target_keeps_its_raw_bytes() {
        let filters = RouteFilters {
            path_rewrite: Some(PathRewrite::Prefix {
                matched: "/prefix".into(),
                with: "/one".into(),
            }),
            ..RouteFilters::default()
        };
        let mut head = b"GET /prefix/caf\xe9/\xff?q=\xfe HTTP/1.1\r\nhost: gw\r\n\r\n".to_vec();
        picked(filters).edit_http1_request(&mut head);
        assert_eq!(head, b"GET /one/caf\xe9/\xff?q=\xfe HTTP/1.1\r\nhost: gw\r\n\r\n");
    }

    #[test]
    fn an_h2_request_gets_its_authority_and_path_rewritten() {
        let p = picked(RouteFilters {
            host_rewrite: Some("one.example.org".into()),
            path_rewrite: Some(PathRewrite::Full("/one".into())),
            request_headers: HeaderEdits {
                remove: vec![name("x-remove")],
                ..HeaderEdits::default()
            },
            ..RouteFilters::default()
        });
        let mut request = http::Request::builder()
            .uri("http://gw:8080/full/one/two?q=1")
            .header("x-remove", "1")
            .body(())
            .unwrap();
        p.edit_h2_request(&mut request);
        assert_eq!(request.uri().to_string(), "http://one.example.org/one?q=1");
        assert!(request.headers().get("x-remove").is_none());
    }

    #[test]
    fn an_h2_response_gets_the_backend_edits_then_the_routes() {
        let backend = RouteFilters {
            response_headers: HeaderEdits {
                set: vec![(name("x-both"), value("backend"))],
                ..HeaderEdits::default()
            },
            ..RouteFilters::default()
        };
        let route = RouteFilters {
            response_headers: HeaderEdits {
                set: vec![(name("x-both"), value("route"))],
                add: vec![(name("x-add"), value("a"))],
                ..HeaderEdits::default()
            },
            ..RouteFilters::default()
        };
        let p = Picked {
            route: Some(Arc::new(route)),
            backend: Some(Arc::new(backend)),
            cors: None,
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("x-add", value("0"));
        p.edit_h2_response(&mut headers);
        assert_eq!(headers.get("x-both").unwrap(), "route");
        let adds: Vec<_> = headers.get_all("x-add").iter().collect();
        assert_eq!(adds, ["0", "a"]);
    }
}

//! Request -> route: the listener's virtual host for the Host header, then the first route that
//! matches (routes are already in precedence order in the Snapshot).

use http::request::Parts;
use snapshot::{Listener, Route, VirtualHost};

pub(crate) fn find_listener(listeners: &[Listener], port: u16) -> Option<&Listener> {
    listeners.iter().find(|l| l.port == port)
}

pub(crate) fn route<'a>(listener: &'a Listener, req: &Parts) -> Option<&'a Route> {
    let host = authority(req);
    let vh = virtual_host(&listener.virtual_hosts, host)?;
    let path = req.uri.path();
    vh.routes.iter().find(|r| {
        r.path.matches(path)
            && r.method.as_ref().is_none_or(|m| m == req.method)
            && r.headers.iter().all(|(name, value)| {
                req.headers
                    .get(name)
                    .is_some_and(|v| v.as_bytes() == value.as_bytes())
            })
    })
}

/// The request's host without a port (`ignore_port_in_host_matching`).
fn authority(req: &Parts) -> &str {
    let raw = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    if raw.starts_with('[') {
        return raw.split(']').next().map(|h| &h[1..]).unwrap_or(raw);
    }
    raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
}

fn virtual_host<'a>(hosts: &'a [VirtualHost], host: &str) -> Option<&'a VirtualHost> {
    // Ordered exact, then wildcards longest first, then "*": the first that covers wins.
    hosts.iter().find(|vh| {
        vh.domains.iter().any(|d| {
            if d == "*" {
                true
            } else if let Some(suffix) = d.strip_prefix('*') {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            } else {
                d.eq_ignore_ascii_case(host)
            }
        })
    })
}

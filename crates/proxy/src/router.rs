//! Request -> route: the listener's virtual host for the Host header, then the first route that
//! matches (routes are already in precedence order in the Snapshot).

use snapshot::{Listener, Route, VirtualHost};

/// What routing looks at in a request.
pub(crate) struct RequestView<'a> {
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, after the `?` ("" when none).
    pub query: &'a str,
    /// The Host header (or the absolute-form target's authority).
    pub host: &'a str,
    /// The value of a header, by lower-case name.
    pub header: &'a (dyn Fn(&str) -> Option<&'a [u8]> + Sync),
    /// The SNI of a TLS connection.
    pub server_name: Option<&'a str>,
    /// `http` or `https`: the client connection's.
    pub scheme: &'static str,
}

/// The listener a connection came in on: the one that asked for the address it was accepted
/// on (`bound`, as bound: `[::]:PORT` for every interface). Gateways on one port with different
/// addresses are routed apart this way.
pub(crate) fn find_listener(listeners: &[Listener], bound: std::net::SocketAddr) -> Option<&Listener> {
    listeners.iter().find(|l| l.bind_addresses().contains(&bound))
}

pub(crate) fn route<'a>(listener: &'a Listener, req: &RequestView<'_>) -> Option<&'a Route> {
    let host = without_port(req.host);
    // Meant for another listener of the HTTPS port than the one the SNI chose: 421.
    if listener
        .tls
        .as_ref()
        .is_some_and(|tls| tls.misdirected(req.server_name, host))
    {
        return Some(snapshot::misdirected_route());
    }
    let vh = virtual_host(&listener.virtual_hosts, host)?;
    vh.routes.iter().find(|r| {
        r.path.matches(req.path)
            && r.method.as_ref().is_none_or(|m| m.as_str() == req.method)
            && r.headers
                .iter()
                .all(|(name, value)| (req.header)(name.as_str()).is_some_and(|v| v == value.as_bytes()))
            && crate::query_match::all_match(&r.query_params, req.query)
    })
}

/// The host without a port (`ignore_port_in_host_matching`) nor an IPv6 literal's brackets.
fn without_port(raw: &str) -> &str {
    let (host, _) = snapshot::split_port(raw);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn virtual_host<'a>(hosts: &'a [VirtualHost], host: &str) -> Option<&'a VirtualHost> {
    // Ordered exact, then wildcards longest first, then "*": the first that covers wins.
    hosts
        .iter()
        .find(|vh| vh.domains.iter().any(|d| snapshot::hostname_matches(d, host)))
}

//! The request's hash for ring hash and maglev, from the route's hash policies, as Envoy
//! computes it: xxHash64 of a header's value, a cookie's value or the client's IP; several
//! policies are combined (the hash so far rotated left by one, xor the new one); a `terminal`
//! policy that produced a hash ends the list. A cookie policy with a `ttl` and no cookie on the
//! request generates one, hashes it, and leaves a `Set-Cookie` for the response.

use std::net::SocketAddr;

use snapshot::{CookieHash, HashPolicy, HashSource};
use xxhash_rust::xxh64::xxh64;

use crate::h1::RequestHead;

/// The request's headers, as the load balancer reads them.
pub(crate) trait RequestHeaders: Sync {
    /// Every value of the header `name` (case-insensitive), in order.
    fn values(&self, name: &str) -> Vec<&[u8]>;
}

/// An HTTP/1.1 request head's headers, in the connection's buffer.
pub(crate) struct Http1Headers<'a> {
    pub buf: &'a [u8],
    pub head: &'a RequestHead,
}

impl RequestHeaders for Http1Headers<'_> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.head
            .headers
            .iter()
            .filter(|h| self.buf[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &self.buf[h.value.clone()])
            .collect()
    }
}

/// An HTTP/2 request's headers (names are lower-case there; `get_all` finds them by any case).
impl RequestHeaders for http::HeaderMap {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.get_all(name).iter().map(|v| v.as_bytes()).collect()
    }
}

/// What a pick knows of the request, and what it leaves for the response.
pub(crate) struct PickContext<'a> {
    pub headers: &'a dyn RequestHeaders,
    /// The downstream client's address.
    pub client: SocketAddr,
    /// `Set-Cookie` values the response must carry (a generated hash cookie).
    pub set_cookies: Vec<String>,
    /// The HTTPRoute filters of the picked route and backend.
    pub route_filters: crate::route_filters::Picked,
}

impl<'a> PickContext<'a> {
    pub(crate) fn new(headers: &'a dyn RequestHeaders, client: SocketAddr) -> Self {
        PickContext {
            headers,
            client,
            set_cookies: Vec::new(),
            route_filters: Default::default(),
        }
    }
}

pub(super) fn request_hash(policies: &[HashPolicy], context: &mut PickContext<'_>) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for policy in policies {
        if let Some(new) = policy_hash(&policy.source, context) {
            // Rotating keeps two identical policies from cancelling each other out.
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ new);
        }
        if policy.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

fn policy_hash(source: &HashSource, context: &mut PickContext<'_>) -> Option<u64> {
    match source {
        HashSource::Header(name) => {
            let mut values = context.headers.values(name);
            match values.len() {
                0 => None,
                1 => Some(xxh64(values[0], 0)),
                // Envoy hashes several values sorted (their order does not matter), each hash
                // seeding the next.
                _ => {
                    values.sort_unstable();
                    Some(values.iter().fold(0, |seed, v| xxh64(v, seed)))
                }
            }
        }
        HashSource::Cookie(cookie) => {
            let found = cookie_value(context.headers, &cookie.name).filter(|v| !v.is_empty());
            match (found, cookie.ttl) {
                (Some(value), _) => Some(xxh64(value, 0)),
                (None, Some(ttl)) => {
                    let value = generated_cookie_value(context.client);
                    context
                        .set_cookies
                        .push(set_cookie(cookie, &value, ttl.as_secs()));
                    Some(xxh64(value.as_bytes(), 0))
                }
                (None, None) => None,
            }
        }
        HashSource::SourceIp => Some(xxh64(context.client.ip().to_string().as_bytes(), 0)),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, without surrounding quotes.
fn cookie_value<'h>(headers: &'h dyn RequestHeaders, name: &str) -> Option<&'h [u8]> {
    for header in headers.values("cookie") {
        for pair in header.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            let value = &pair[eq + 1..];
            return Some(match value {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            });
        }
    }
    None
}

/// Envoy's generated value: the hex xxHash64 of the client's address and port, the same for
/// every request of one connection (so racing requests get one cookie) and different across
/// connections.
fn generated_cookie_value(client: SocketAddr) -> String {
    format!("{:016x}", xxh64(client.to_string().as_bytes(), 0))
}

/// Envoy's `Set-Cookie` for a generated hash cookie: the quoted value, `Max-Age` (none for a
/// zero ttl: a session cookie), `Path`, then the attributes in kgateway's order.
fn set_cookie(cookie: &CookieHash, value: &str, max_age_secs: u64) -> String {
    let mut out = format!("{}=\"{}\"", cookie.name, value);
    if max_age_secs > 0 {
        out.push_str(&format!("; Max-Age={max_age_secs}"));
    }
    if let Some(path) = cookie.path.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(&format!("; Path={path}"));
    }
    if cookie.http_only {
        out.push_str("; HttpOnly");
    }
    if cookie.secure {
        out.push_str("; Secure");
    }
    if let Some(same_site) = &cookie.same_site {
        out.push_str(&format!("; SameSite={same_site}"));
    }
    out
}

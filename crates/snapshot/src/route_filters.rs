//! HTTPRoute filters (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect,
//! URLRewrite) as the data plane applies them, and their Envoy rendering: header edits as
//! `request_headers_to_add/remove` and `response_headers_to_add/remove` on the route or on one
//! weighted cluster, a redirect as the route's `redirect` action, a rewrite as the route
//! action's `prefix_rewrite`/`regex_rewrite`/`host_rewrite_literal` (as kgateway renders them).

use serde_json::{Map, Value, json};

use crate::{Route, RouteAction};

/// Headers that describe one HTTP/1.1 connection (RFC 9113, 8.2.2): HTTP/2 forbids them, so the
/// h2 codec refuses a head carrying one (`te` is allowed there with the value `trailers` only).
/// The HTTP/1.1 -> HTTP/2 paths drop them; a header filter may not set or add them.
pub const CONNECTION_SPECIFIC_HEADERS: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Header edits, applied as Envoy applies a route's: every `remove` first, then `set` (replaces
/// every value: `OVERWRITE_IF_EXISTS_OR_ADD`), then `add` (one more value: `APPEND_IF_EXISTS_OR_ADD`).
/// Names are lower case; they are compared without regard to case.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderEdits {
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits to a list of header lines (name, value), in order.
    pub fn apply(&self, lines: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        let named = |line: &(Vec<u8>, Vec<u8>), name: &http::HeaderName| {
            line.0.eq_ignore_ascii_case(name.as_str().as_bytes())
        };
        for name in &self.remove {
            lines.retain(|l| !named(l, name));
        }
        for (name, value) in &self.set {
            lines.retain(|l| !named(l, name));
            lines.push((name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
        for (name, value) in &self.add {
            lines.push((name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
    }

    /// Applies the edits to an HTTP/2 header map.
    pub fn apply_to_map(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A new path for a request (URLRewrite) or for a redirect's Location (RequestRedirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// ReplaceFullPath: the whole path becomes this (the query stays).
    Full(String),
    /// ReplacePrefixMatch: the route's PathPrefix match (`matched`, as written) is replaced
    /// by `with`, as Gateway API's table says: `/foo` -> `/xyz` turns `/foo/bar` into
    /// `/xyz/bar`; a trailing `/` of either does not double the separator; `/` strips the
    /// prefix (`/foo` -> `/`).
    Prefix { matched: String, with: String },
}

impl PathRewrite {
    /// The new path for `path` (without the query).
    pub fn apply(&self, path: &str) -> String {
        // Both the path and the route's strings are UTF-8, so the result is too.
        String::from_utf8(self.apply_to_bytes(path.as_bytes()))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// The new path for the raw bytes of a request target's path: bytes the client sent that
    /// are not UTF-8 go upstream as they came.
    pub fn apply_to_bytes(&self, path: &[u8]) -> Vec<u8> {
        match self {
            PathRewrite::Full(full) => full.as_bytes().to_vec(),
            PathRewrite::Prefix { matched, with } => {
                let matched = matched.trim_end_matches('/');
                // The route matched, so `path` starts with the prefix at a segment boundary;
                // a path that does not (never routed here) is left as it is.
                let Some(rest) = path.strip_prefix(matched.as_bytes()) else {
                    return path.to_vec();
                };
                let mut new = with.trim_end_matches('/').as_bytes().to_vec();
                new.extend_from_slice(rest);
                if new.is_empty() { b"/".to_vec() } else { new }
            }
        }
    }

    /// Envoy's rendering: `path_redirect`/`regex_rewrite` for a full path, `prefix_rewrite`
    /// of the replacement without its trailing `/` (Envoy swaps the matched prefix literally),
    /// and a `regex_rewrite` where a plain prefix swap would go wrong: a replacement of `/`
    /// (kgateway's workaround for envoyproxy/envoy#26055) or a match of `/`.
    fn render(&self, full_key: &str, into: &mut Map<String, Value>) {
        match self {
            PathRewrite::Full(full) if full_key == "path_redirect" => {
                into.insert("path_redirect".into(), full.clone().into());
            }
            PathRewrite::Full(full) => {
                into.insert(
                    "regex_rewrite".into(),
                    json!({"pattern": {"regex": ".*"}, "substitution": full}),
                );
            }
            PathRewrite::Prefix { matched, with } => {
                let matched = matched.trim_end_matches('/');
                let with = with.trim_end_matches('/');
                if matched.is_empty() {
                    into.insert(
                        "regex_rewrite".into(),
                        json!({"pattern": {"regex": "^/"}, "substitution": format!("{with}/")}),
                    );
                } else if with.is_empty() {
                    into.insert(
                        "regex_rewrite".into(),
                        json!({
                            "pattern": {"regex": format!("^{}\\/*", regex_escape(matched))},
                            "substitution": "/",
                        }),
                    );
                } else {
                    into.insert("prefix_rewrite".into(), with.into());
                }
            }
        }
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RequestRedirect: the route answers with a redirect to a Location built from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`; None: the request's.
    pub scheme: Option<String>,
    /// None: the request's host.
    pub host: Option<String>,
    /// Envoy's `port_redirect`: written into the Location as `:port`, even a default one (the
    /// request's own port then goes); None: no port but the one the request's Host has, which
    /// goes too when the scheme changes and it is that scheme's default. Translation picks it
    /// so that the Location is Gateway API's (`translate/src/route_filters.rs`).
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

impl Redirect {
    /// The Location for a request with this scheme, Host and path, as Envoy builds it
    /// (`Http::Utility::newUri`).
    pub fn location(
        &self,
        request_scheme: &str,
        request_host: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(request_scheme);
        let host = match &self.host {
            Some(host) => host.as_str(),
            None => {
                let (bare, port) = crate::split_port(request_host);
                // Envoy's processRequestHost: the request's port goes when the redirect sets
                // one, or when the scheme changes and it is the old scheme's default.
                let default_of_old = matches!(
                    (request_scheme, port),
                    ("https", Some("443")) | ("http", Some("80"))
                );
                let drop =
                    port.is_some() && (self.port.is_some() || (scheme != request_scheme && default_of_old));
                if drop { bare } else { request_host }
            }
        };
        let path = match &self.path {
            Some(rewrite) => rewrite.apply(path),
            None => path.to_string(),
        };
        let mut location = format!("{scheme}://{host}");
        if let Some(port) = self.port {
            location.push_str(&format!(":{port}"));
        }
        location.push_str(&path);
        if let Some(query) = query {
            location.push('?');
            location.push_str(query);
        }
        location
    }

    fn render(&self) -> Value {
        let mut r = Map::new();
        if let Some(scheme) = &self.scheme {
            r.insert("scheme_redirect".into(), scheme.clone().into());
        }
        if let Some(host) = &self.host {
            r.insert("host_redirect".into(), host.clone().into());
        }
        if let Some(port) = self.port {
            r.insert("port_redirect".into(), port.into());
        }
        if let Some(path) = &self.path {
            path.render("path_redirect", &mut r);
        }
        // MOVED_PERMANENTLY is the enum's zero value, which proto3 JSON leaves out.
        let code = match self.status {
            302 => Some("FOUND"),
            303 => Some("SEE_OTHER"),
            307 => Some("TEMPORARY_REDIRECT"),
            308 => Some("PERMANENT_REDIRECT"),
            _ => None,
        };
        if let Some(code) = code {
            r.insert("response_code".into(), code.into());
        }
        Value::Object(r)
    }
}

/// What a route's filters do (on a weighted cluster: its backendRef's header edits only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteFilters {
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// Set: the route answers with this redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// URLRewrite hostname: the Host (`:authority`) sent upstream.
    pub host_rewrite: Option<String>,
    /// URLRewrite path: the path sent upstream.
    pub path_rewrite: Option<PathRewrite>,
}

impl RouteFilters {
    pub fn is_empty(&self) -> bool {
        self == &RouteFilters::default()
    }

    /// Whether the request head sent upstream changes.
    pub fn edits_request(&self) -> bool {
        !self.request_headers.is_empty() || self.host_rewrite.is_some() || self.path_rewrite.is_some()
    }
}

fn header_options(edits: &HeaderEdits) -> Vec<Value> {
    let set = edits.set.iter().map(|(name, value)| {
        json!({
            "header": {"key": name.as_str(), "value": value.to_str().unwrap_or("")},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        })
    });
    // APPEND_IF_EXISTS_OR_ADD is the zero value: left out.
    let add = edits.add.iter().map(
        |(name, value)| json!({"header": {"key": name.as_str(), "value": value.to_str().unwrap_or("")}}),
    );
    set.chain(add).collect()
}

fn render_edits(filters: &RouteFilters, into: &mut Map<String, Value>) {
    let pairs = [
        (
            &filters.request_headers,
            "request_headers_to_add",
            "request_headers_to_remove",
        ),
        (
            &filters.response_headers,
            "response_headers_to_add",
            "response_headers_to_remove",
        ),
    ];
    for (edits, add_key, remove_key) in pairs {
        let add = header_options(edits);
        if !add.is_empty() {
            into.insert(add_key.into(), Value::Array(add));
        }
        if !edits.remove.is_empty() {
            let names: Vec<Value> = edits.remove.iter().map(|n| n.as_str().into()).collect();
            into.insert(remove_key.into(), Value::Array(names));
        }
    }
}

/// Adds a route's filters to its Envoy JSON (`v`, as `envoy.rs` rendered it without them).
pub(crate) fn render_route(r: &Route, v: &mut Map<String, Value>) {
    if let RouteAction::Forward(targets) = &r.action
        && targets.iter().any(|t| t.filters.is_some())
        && let Some(Value::Object(action)) = v.get_mut("route")
    {
        // A backendRef's filters live on its weighted cluster, so one target is listed as one.
        action.remove("cluster");
        let list: Vec<Value> = targets
            .iter()
            .map(|t| {
                let mut c = Map::new();
                c.insert("name".into(), t.name.clone().into());
                c.insert("weight".into(), t.weight.into());
                if let Some(f) = &t.filters {
                    render_edits(f, &mut c);
                }
                Value::Object(c)
            })
            .collect();
        action.insert("weighted_clusters".into(), json!({"clusters": list}));
    }
    let Some(filters) = &r.filters else { return };
    if let Some(redirect) = &filters.redirect {
        v.remove("route");
        v.remove("direct_response");
        v.insert("redirect".into(), redirect.render());
    }
    if let Some(Value::Object(action)) = v.get_mut("route") {
        if let Some(host) = &filters.host_rewrite {
            action.insert("host_rewrite_literal".into(), host.clone().into());
        }
        if let Some(path) = &filters.path_rewrite {
            path.render("regex_rewrite", action);
        }
    }
    render_edits(filters, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(matched: &str, with: &str) -> PathRewrite {
        PathRewrite::Prefix {
            matched: matched.into(),
            with: with.into(),
        }
    }

    /// Gateway API's ReplacePrefixMatch table (HTTPPathModifier's documentation).
    #[test]
    fn replace_prefix_match_follows_the_spec_table() {
        let table = [
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo", "/foo/", "/xyz/", "/xyz/"),
            ("/foo/", "/foo/", "/xyz", "/xyz/"),
            ("/foo/", "/foo/", "/xyz/", "/xyz/"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/", "/", "/"),
            ("/foo", "/foo/bar", "/", "/bar"),
            ("/foo/", "/foo/bar", "/", "/bar"),
            ("/", "/bar", "/xyz", "/xyz/bar"),
        ];
        for (matched, path, with, want) in table {
            assert_eq!(prefix(matched, with).apply(path), want, "{matched} {path} {with}");
        }
    }

    /// As real Envoy 1.40 answers (checked with these redirect actions).
    #[test]
    fn location_is_built_as_envoy_builds_it() {
        let mut r = Redirect {
            scheme: None,
            host: Some("example.org".into()),
            port: Some(80),
            path: None,
            status: 302,
        };
        // port_redirect is written even when it is the scheme's default.
        assert_eq!(
            r.location("http", "gw:8080", "/a", Some("q=1")),
            "http://example.org:80/a?q=1"
        );
        r.port = None;
        assert_eq!(r.location("http", "gw:8080", "/a", None), "http://example.org/a");
        // No host: the request's, whose port goes when the redirect sets one...
        r.host = None;
        r.port = Some(18080);
        assert_eq!(r.location("http", "gw:80", "/d", None), "http://gw:18080/d");
        assert_eq!(r.location("http", "[::1]:80", "/d", None), "http://[::1]:18080/d");
        // ... or when the scheme changes and it was the old one's default; else it stays.
        r.port = None;
        r.scheme = Some("https".into());
        assert_eq!(r.location("http", "gw:80", "/b", None), "https://gw/b");
        assert_eq!(
            r.location("http", "127.0.0.1:18080", "/b", None),
            "https://127.0.0.1:18080/b"
        );
        assert_eq!(r.location("http", "gw", "/b", None), "https://gw/b");
    }
}

//! Misdirected requests on HTTPS ports (RFC 9110 421, Gateway API's
//! GatewayHTTPSListenerDetectMisdirectedRequests). The client's SNI picks a Gateway listener
//! (a filter chain); a request on that connection whose Host another listener of the port is
//! the most specific for was meant for that other listener (an HTTP/2 client reuses a
//! connection for every name its certificate covers), so it gets 421 and the client opens a
//! connection of its own for it. A Host that no listener of the port covers is routed as usual
//! (404).
//!
//! The data plane asks `ListenerTls::misdirected` per request. The dump says the same thing as
//! Envoy would do it: one route configuration per filter chain (`route_tables`) holding the
//! port's virtual hosts that chain's listener owns, and for every other listener's hostname a
//! virtual host that answers 421 (`direct_response`). With listener isolation (translate gives
//! each listener hostname its own virtual host where a less specific one would catch it),
//! both give the same answer for every (SNI, Host).

use std::sync::LazyLock;

use crate::{Listener, ListenerTls, PathMatch, Route, RouteAction, VirtualHost};

/// The route a misdirected request takes: every path, answered 421 with no body.
pub fn misdirected_route() -> &'static Route {
    static ROUTE: LazyLock<Route> = LazyLock::new(|| Route {
        name: "misdirected-request".into(),
        path: PathMatch::Prefix("/".into()),
        method: None,
        headers: Vec::new(),
        action: RouteAction::Direct {
            status: 421,
            body: String::new(),
        },
        // The 421 answers an upgrade request too (not the 403 of a route without upgrades).
        websocket_upgrade: true,
        query_params: Vec::new(),
        filters: None,
        timeout: None,
        mirrors: Vec::new(),
        cors: None,
    });
    &ROUTE
}

impl ListenerTls {
    /// The filter chain (index into `certificates`) the most specific listener for `name` has.
    fn owner(&self, name: Option<&str>) -> Option<usize> {
        let picked = self.select(name)?;
        self.certificates.iter().position(|c| std::ptr::eq(c, picked))
    }

    /// Is a request for `host` (no port) on a connection whose SNI was `server_name` meant for
    /// another listener of the port? Only when one port serves several listeners.
    pub fn misdirected(&self, server_name: Option<&str>, host: &str) -> bool {
        if self.certificates.len() < 2 {
            return false;
        }
        match (self.owner(server_name), self.owner(Some(host))) {
            (Some(chosen), Some(owner)) => chosen != owner,
            _ => false,
        }
    }
}

/// One route configuration of a listener, as the dump shows it.
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// The route configuration each filter chain uses, in filter chain order (one, named as the
/// listener, when the port serves at most one Gateway listener: nothing can be misdirected).
pub fn route_tables(l: &Listener) -> Vec<RouteTable> {
    let Some(tls) = l.tls.as_ref().filter(|t| t.certificates.len() >= 2) else {
        return vec![RouteTable {
            name: l.name.clone(),
            virtual_hosts: l.virtual_hosts.clone(),
        }];
    };
    (0..tls.certificates.len())
        .map(|chain| RouteTable {
            name: chain_route_name(l, chain),
            virtual_hosts: chain_virtual_hosts(l, tls, chain),
        })
        .collect()
}

/// The route configuration name of filter chain `chain`: `listener~443~<Gateway listener>`,
/// with the chain's index added when two chains have the same listener name.
pub fn chain_route_name(l: &Listener, chain: usize) -> String {
    let Some(tls) = l.tls.as_ref().filter(|t| t.certificates.len() >= 2) else {
        return l.name.clone();
    };
    let name = &tls.certificates[chain].name;
    let repeated = tls.certificates.iter().filter(|c| &c.name == name).count() > 1;
    if repeated {
        format!("{}~{name}~{chain}", l.name)
    } else {
        format!("{}~{name}", l.name)
    }
}

fn chain_virtual_hosts(l: &Listener, tls: &ListenerTls, chain: usize) -> Vec<VirtualHost> {
    let own_domains: Vec<String> = match tls.certificates[chain].server_names.as_slice() {
        [] => vec!["*".into()],
        names => names.to_vec(),
    };
    // The port's virtual hosts this chain's listener owns (and any that no listener does,
    // which the data plane serves on every chain).
    let mut hosts: Vec<VirtualHost> = l
        .virtual_hosts
        .iter()
        .filter(|vh| {
            let owner = tls.owner(Some(&vh.domains[0]));
            owner.is_none_or(|o| o == chain)
        })
        .cloned()
        .collect();
    // Its own names answer 404 when none of its routes has them, never another's 421.
    let mut extra = Vec::new();
    for domain in &own_domains {
        if !hosts.iter().any(|vh| vh.domains.contains(domain)) {
            extra.push(VirtualHost {
                name: format!("{}~{}", l.name, domain.replace('.', "_")),
                domains: vec![domain.clone()],
                routes: Vec::new(),
            });
        }
    }
    // Every other listener's names: 421.
    let mut misdirected: Vec<String> = Vec::new();
    for (i, c) in tls.certificates.iter().enumerate() {
        if i == chain {
            continue;
        }
        let names = if c.server_names.is_empty() {
            vec!["*".to_string()]
        } else {
            c.server_names.clone()
        };
        for name in names {
            let taken = own_domains.contains(&name)
                || misdirected.contains(&name)
                || hosts.iter().any(|vh| vh.domains.contains(&name));
            if !taken {
                misdirected.push(name);
            }
        }
    }
    extra.extend(misdirected.into_iter().map(|domain| VirtualHost {
        name: format!("{}~misdirected~{}", l.name, domain.replace('.', "_")),
        domains: vec![domain],
        routes: vec![misdirected_route().clone()],
    }));
    hosts.extend(extra);
    crate::sort_virtual_hosts(&mut hosts);
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ListenerConnection, ServerCertificate};

    fn chain(name: &str, host: Option<&str>) -> ServerCertificate {
        ServerCertificate {
            name: name.into(),
            server_names: host.iter().map(|h| h.to_string()).collect(),
            certificate_chain: String::new(),
            private_key: String::new(),
            client_validation: None,
        }
    }

    /// The listeners of the conformance test, in match order.
    fn port() -> ListenerTls {
        ListenerTls {
            certificates: vec![
                chain("https-with-hostname", Some("second-example.org")),
                chain(
                    "https-with-hostname-matching-wildcard",
                    Some("fourth-example.wildcard.org"),
                ),
                chain("https-with-wildcard-hostname", Some("*.wildcard.org")),
                chain("https", None),
            ],
        }
    }

    #[test]
    fn a_host_another_listener_owns_is_misdirected() {
        let tls = port();
        let m = |sni: &str, host: &str| tls.misdirected(Some(sni), host);
        assert!(!m("example.org", "example.org"));
        assert!(m("example.org", "second-example.org"));
        assert!(!m("example.org", "unknown-example.org"));
        assert!(!m("second-example.org", "second-example.org"));
        assert!(m("second-example.org", "example.org"));
        assert!(m("second-example.org", "unknown-example.org"));
        assert!(!m("third-example.wildcard.org", "fith-example.wildcard.org"));
        assert!(m("third-example.wildcard.org", "fourth-example.wildcard.org"));
        assert!(m("fourth-example.wildcard.org", "fith-example.wildcard.org"));
        assert!(!m("unknown-example.org", "Example.org"));
        // No SNI: the catch-all's connection.
        assert!(tls.misdirected(None, "second-example.org"));
        // One listener on the port: nothing is misdirected.
        let one = ListenerTls {
            certificates: vec![chain("a", Some("a.example.com"))],
        };
        assert!(!one.misdirected(Some("a.example.com"), "b.example.com"));
    }

    #[test]
    fn each_chain_has_its_own_route_table() {
        let vh = |d: &str| VirtualHost {
            name: format!("listener~443~{d}"),
            domains: vec![d.into()],
            routes: Vec::new(),
        };
        let l = Listener {
            name: "listener~443".into(),
            port: 443,
            addresses: Vec::new(),
            virtual_hosts: vec![vh("example.org"), vh("second-example.org"), vh("*.wildcard.org")],
            tls: Some(port()),
            connection: ListenerConnection::default(),
        };
        let tables = route_tables(&l);
        let summary: Vec<(String, Vec<(String, bool)>)> = tables
            .iter()
            .map(|t| {
                let hosts = t
                    .virtual_hosts
                    .iter()
                    .map(|vh| {
                        (
                            vh.domains[0].clone(),
                            vh.routes.first() == Some(misdirected_route()),
                        )
                    })
                    .collect();
                (t.name.clone(), hosts)
            })
            .collect();
        let s = |d: &str, m: bool| (d.to_string(), m);
        assert_eq!(
            summary,
            vec![
                (
                    "listener~443~https-with-hostname".into(),
                    vec![
                        s("fourth-example.wildcard.org", true),
                        s("second-example.org", false),
                        s("*.wildcard.org", true),
                        s("*", true)
                    ]
                ),
                (
                    "listener~443~https-with-hostname-matching-wildcard".into(),
                    vec![
                        s("fourth-example.wildcard.org", false),
                        s("second-example.org", true),
                        s("*.wildcard.org", true),
                        s("*", true)
                    ]
                ),
                (
                    "listener~443~https-with-wildcard-hostname".into(),
                    vec![
                        s("fourth-example.wildcard.org", true),
                        s("second-example.org", true),
                        s("*.wildcard.org", false),
                        s("*", true)
                    ]
                ),
                (
                    "listener~443~https".into(),
                    vec![
                        s("fourth-example.wildcard.org", true),
                        s("second-example.org", true),
                        s("example.org", false),
                        s("*.wildcard.org", true),
                        s("*", false)
                    ]
                ),
            ]
        );
    }
}

//! Listener isolation (Gateway API's GatewayHTTPListenerIsolation): a request is routed only by
//! the routes of the most specific listener whose hostname matches its host. The listeners of
//! a port share one table of virtual hosts, one per effective hostname, so two things keep a
//! less specific listener's routes from answering for a more specific one:
//! - a route hostname that a more specific listener of its Gateway owns is not added for the
//!   less specific one (`owned_elsewhere`): a route on the catch-all listener with hostname
//!   `*.example.com` serves nothing when a listener `*.example.com` exists;
//! - a listener hostname that a less specific virtual host would catch gets a virtual host of
//!   its own, empty when none of its routes has that name (`add_listener_hosts`): its requests
//!   get 404, never the other listener's routes.

use snapshot::VirtualHost;

/// How specific a listener hostname is: an exact name, then wildcards by length, then none.
fn specificity(hostname: Option<&str>) -> (u8, usize) {
    match hostname {
        None => (0, 0),
        Some(h) if h.starts_with('*') => (1, h.len()),
        Some(h) => (2, h.len()),
    }
}

/// Does the listener hostname `pattern` (None: every host) cover `host` (an exact name or a
/// wildcard, which is covered when all the names it matches are)?
fn covers(pattern: Option<&str>, host: &str) -> bool {
    match pattern {
        None => true,
        Some(p) => snapshot::hostname_matches(p, host),
    }
}

/// Does another listener of the same Gateway and port, more specific than `listener` (the
/// route's), cover every name of the effective hostname `host`? Then that listener's routes
/// answer for it, and this route must not.
/// `siblings`: (port, hostname) of the Gateway's programmed listeners.
pub(crate) fn owned_elsewhere(
    siblings: &[(i32, Option<String>)],
    port: i32,
    listener: Option<&str>,
    host: &str,
) -> bool {
    let own = specificity(listener);
    siblings
        .iter()
        .any(|(p, other)| *p == port && specificity(other.as_deref()) > own && covers(other.as_deref(), host))
}

/// Gives each listener hostname of the port (`hostnames`) a virtual host when a less specific
/// one would otherwise take its requests; `sort` restores match order after.
pub(crate) fn add_listener_hosts(
    listener: &str,
    virtual_hosts: &mut Vec<VirtualHost>,
    hostnames: &[Option<String>],
    sort: impl Fn(&mut [VirtualHost]),
) {
    let mut added = false;
    for hostname in hostnames.iter().flatten() {
        let hostname = hostname.to_ascii_lowercase();
        let has_own = virtual_hosts.iter().any(|vh| vh.domains.contains(&hostname));
        let caught_by_another = virtual_hosts
            .iter()
            .flat_map(|vh| &vh.domains)
            .any(|d| d != &hostname && (d == "*" || covers(Some(d), &hostname)));
        if !has_own && caught_by_another {
            virtual_hosts.push(VirtualHost {
                name: format!("{listener}~{}", crate::routes::host_label(&hostname)),
                domains: vec![hostname],
                routes: Vec::new(),
            });
            added = true;
        }
    }
    if added {
        sort(virtual_hosts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|h| h.map(str::to_string)).collect()
    }

    #[test]
    fn a_more_specific_listener_owns_its_names() {
        let mut siblings: Vec<(i32, Option<String>)> = names(&[
            None,
            Some("*.example.com"),
            Some("*.foo.example.com"),
            Some("abc.foo.example.com"),
        ])
        .into_iter()
        .map(|h| (80, h))
        .collect();
        // Another port's listener changes nothing.
        siblings.push((81, Some("bar.com".into())));
        let owned_elsewhere = |listener, host| owned_elsewhere(&siblings, 80, listener, host);
        // The catch-all listener keeps what no other listener covers.
        assert!(!owned_elsewhere(None, "bar.com"));
        assert!(!owned_elsewhere(None, "*"));
        assert!(owned_elsewhere(None, "*.example.com"));
        assert!(owned_elsewhere(None, "abc.foo.example.com"));
        assert!(!owned_elsewhere(Some("*.example.com"), "*.example.com"));
        assert!(owned_elsewhere(Some("*.example.com"), "*.foo.example.com"));
        assert!(owned_elsewhere(Some("*.example.com"), "x.foo.example.com"));
        assert!(!owned_elsewhere(Some("*.foo.example.com"), "*.foo.example.com"));
        assert!(owned_elsewhere(Some("*.foo.example.com"), "abc.foo.example.com"));
        assert!(!owned_elsewhere(
            Some("abc.foo.example.com"),
            "abc.foo.example.com"
        ));
    }

    #[test]
    fn a_listener_without_routes_of_its_name_gets_an_empty_host() {
        let vh = |d: &str| VirtualHost {
            name: d.into(),
            domains: vec![d.into()],
            routes: Vec::new(),
        };
        let mut hosts = vec![vh("*")];
        let hostnames = names(&[None, Some("abc.example.com"), Some("*.example.com")]);
        add_listener_hosts("listener~80", &mut hosts, &hostnames, |v| {
            v.sort_by_key(|h| h.name.len())
        });
        let domains: Vec<&str> = hosts.iter().map(|h| h.domains[0].as_str()).collect();
        assert_eq!(domains, ["*", "*.example.com", "abc.example.com"]);
        // A listener nothing less specific would catch needs none.
        let mut hosts = vec![vh("www.example.com")];
        add_listener_hosts(
            "l",
            &mut hosts,
            &names(&[Some("api.example.com")]),
            |_: &mut [VirtualHost]| {},
        );
        assert_eq!(hosts.len(), 1);
    }
}

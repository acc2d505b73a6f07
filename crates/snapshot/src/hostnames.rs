//! Host names, one home for the data plane and translation: a Host/authority split from its
//! port, a name matched against a hostname pattern (a virtual host's domain, a listener's
//! hostname, a certificate's server name), and the order of a port's virtual hosts.

use crate::VirtualHost;

/// `host:port` -> (`host`, Some(`port`)); `[v6]:port` -> (`[v6]`, Some(`port`)); an IPv6
/// literal keeps its brackets.
pub fn split_port(host: &str) -> (&str, Option<&str>) {
    let colon = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    match colon {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    }
}

/// Does `name` match `pattern`, without regard to case (DNS names are case-insensitive)?
/// `*` matches every name (Envoy's catch-all domain); `*.example.com` (Gateway API's wildcard,
/// Envoy's suffix domain) matches one or more labels before `.example.com`, so also a wildcard
/// name under it (`*.a.example.com`: listener isolation asks whether one wildcard covers
/// another); anything else matches exactly.
pub fn hostname_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            name.len() > suffix.len()
                && name.as_bytes()[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Match order of a port's virtual hosts: exact hostnames first, then longer wildcards, then
/// the catch-all "*". Envoy picks the most specific domain whatever the order; the dump keeps
/// this one so it reads in match order.
pub fn sort_virtual_hosts(hosts: &mut [VirtualHost]) {
    hosts.sort_by_key(|vh| {
        let d = &vh.domains[0];
        (
            d == "*",
            d.starts_with('*'),
            std::cmp::Reverse(d.len()),
            d.clone(),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_split_off_but_not_an_ipv6_literals_colons() {
        assert_eq!(split_port("a.example:8080"), ("a.example", Some("8080")));
        assert_eq!(split_port("a.example"), ("a.example", None));
        assert_eq!(split_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
    }

    #[test]
    fn wildcards_match_one_or_more_labels_in_any_case() {
        assert!(hostname_matches("*", ""));
        assert!(hostname_matches("*.example.com", "a.b.EXAMPLE.com"));
        assert!(hostname_matches("*.example.com", "*.a.example.com"));
        assert!(!hostname_matches("*.example.com", "example.com"));
        assert!(!hostname_matches("*.example.com", ".example.com"));
        assert!(hostname_matches("Foo.example.com", "foo.EXAMPLE.com"));
        assert!(!hostname_matches("foo.example.com", "bar.example.com"));
    }
}

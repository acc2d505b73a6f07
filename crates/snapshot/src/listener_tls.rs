//! Downstream TLS: an HTTPS port's certificates, chosen by the client's SNI, and the listener
//! options a ListenerPolicy sets on accepted connections.

use crate::TcpKeepalive;

/// The certificates an HTTPS port serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// One per Gateway listener with a usable certificate, in match order: exact server names
    /// first, then wildcards (longest first), then the one without names (any SNI, or none).
    pub certificates: Vec<ServerCertificate>,
}

/// One Gateway listener's certificate and the names it is served for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    /// The Gateway listener's name: Envoy's filter chain name.
    pub name: String,
    /// Lower-case SNI names (`www.example.com`, `*.example.com`); empty: every name.
    pub server_names: Vec<String>,
    /// PEM, leaf first.
    pub certificate_chain: String,
    /// PEM.
    pub private_key: String,
    /// Client certificates asked for and checked (Gateway API `spec.tls.frontend`).
    pub client_validation: Option<ClientValidation>,
}

/// How a filter chain checks client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientValidation {
    /// PEM CA certificates a client certificate must chain to.
    pub ca_bundle: String,
    /// AllowInsecureFallback: a client without a valid certificate is let through (Envoy's
    /// `trust_chain_verification: ACCEPT_UNTRUSTED` without `require_client_certificate`).
    pub allow_insecure_fallback: bool,
}

impl ListenerTls {
    /// The certificate for a ClientHello's SNI (none when the client sent no name).
    pub fn select(&self, sni: Option<&str>) -> Option<&ServerCertificate> {
        let sni = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        self.certificates.iter().find(|c| {
            c.server_names.is_empty()
                || sni.as_deref().is_some_and(|name| {
                    c.server_names
                        .iter()
                        .any(|pattern| crate::hostname_matches(pattern, name))
                })
        })
    }
}

/// What a ListenerPolicy sets on the port's accepted connections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerConnection {
    /// SO_KEEPALIVE and its timers on every accepted socket (Envoy's `Listener.tcp_keepalive`).
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Bytes buffered per client connection, each way.
    pub per_connection_buffer_limit_bytes: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, names: &[&str]) -> ServerCertificate {
        ServerCertificate {
            name: name.into(),
            server_names: names.iter().map(|s| s.to_string()).collect(),
            certificate_chain: String::new(),
            private_key: String::new(),
            client_validation: None,
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let tls = ListenerTls {
            certificates: vec![
                cert("exact", &["www.example.com"]),
                cert("wild", &["*.example.com"]),
                cert("any", &[]),
            ],
        };
        let pick = |sni| tls.select(sni).map(|c| c.name.as_str());
        assert_eq!(pick(Some("www.example.com")), Some("exact"));
        assert_eq!(pick(Some("WWW.Example.com.")), Some("exact"));
        assert_eq!(pick(Some("api.example.com")), Some("wild"));
        assert_eq!(pick(Some("example.com")), Some("any"));
        assert_eq!(pick(None), Some("any"));
        let no_default = ListenerTls {
            certificates: vec![cert("exact", &["www.example.com"])],
        };
        assert!(no_default.select(Some("other.example.com")).is_none());
    }
}

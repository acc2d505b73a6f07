//! Where each Gateway listens, and what its `status.addresses` says.
//!
//! A Gateway with `spec.addresses` binds those. One without binds an address of the address
//! pool (`kgw run --gateway-address-pool`, as a LoadBalancer controller gives each Service of type
//! LoadBalancer its own address), or, without a pool, every interface (`[::]`, IPv4 mapped in).
//!
//! The data plane gets one listener per (bind address, port): Gateways on one port with
//! different addresses are routed apart. A Gateway with several addresses has its routes on each
//! of them. Every-interface and specific binds of one port coexist: the kernel gives a
//! connection to the socket bound to its exact destination address first, so a specific
//! address's Gateway gets its traffic and the every-interface Gateway the rest (Envoy's
//! listeners on `0.0.0.0:80` and `10.0.0.1:80` behave the same).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use api::{Gateway, Kind, Object, ObjectKey};
use serde_json::Value;
use snapshot::{Listener, ListenerTls, ServerCertificate};

use crate::routes::{Candidates, GatewayListener};
use crate::{Resources, Statuses, condition, json_object, objects};

/// The addresses Gateways get from a pool, kept while each Gateway lives.
///
/// Stable by memory: a Gateway keeps its address for as long as the process serves it, whatever
/// is created or deleted beside it (a client that resolved it keeps reaching it). New Gateways
/// take the lowest free address, oldest first, so a restart gives the same addresses back when
/// the set of Gateways is the same.
#[derive(Debug, Clone)]
pub struct AddressPool {
    /// The first and last address that may be given.
    first: u128,
    last: u128,
    ipv6: bool,
    assigned: BTreeMap<ObjectKey, IpAddr>,
}

impl AddressPool {
    /// `CIDR`, e.g. `127.0.10.0/24`. As Python's `ip_network(...).hosts()`: an IPv4 network of
    /// more than two addresses gives neither its network nor its broadcast address; an IPv6
    /// one not its first (the subnet-router anycast address).
    pub fn parse(cidr: &str) -> Result<AddressPool, String> {
        let usage =
            || format!("invalid address pool {cidr:?}: give a CIDR, e.g. 127.0.10.0/24 or fd00:10::/120");
        let (ip, len) = cidr.split_once('/').ok_or_else(usage)?;
        let ip: IpAddr = ip.parse().map_err(|_| usage())?;
        let len: u32 = len.parse().map_err(|_| usage())?;
        let (bits, value, ipv6) = match ip {
            IpAddr::V4(v4) => (32, u128::from(u32::from(v4)), false),
            IpAddr::V6(v6) => (128, u128::from(v6), true),
        };
        if len > bits {
            return Err(usage());
        }
        let host_bits = bits - len;
        let mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let network = value & !mask;
        let broadcast = network | mask;
        if value != network {
            return Err(format!(
                "invalid address pool {cidr:?}: host bits are set; the network is {}/{len}",
                to_ip(network, ipv6)
            ));
        }
        let (first, last) = match (ipv6, host_bits) {
            (_, 0) => (network, network),
            (false, 1) => (network, broadcast),
            (false, _) => (network + 1, broadcast - 1),
            (true, _) => (network + 1, broadcast),
        };
        Ok(AddressPool {
            first,
            last,
            ipv6,
            assigned: BTreeMap::new(),
        })
    }

    /// Gives every Gateway of ours without `spec.addresses` an address, keeping those it has;
    /// frees the addresses of Gateways that are gone. Addresses a Gateway names in
    /// `spec.addresses` are never given to another.
    pub fn assign(&mut self, resources: &Resources) -> Addressing {
        let resources = crate::gateway_class::without_foreign_gateways(resources);
        let mut wanting: Vec<(&ObjectKey, &Gateway)> = Vec::new();
        let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
        for (key, gw) in crate::oldest_first(&resources, Kind::Gateway, |o| match o {
            Object::Gateway(gw) => Some(&**gw),
            _ => None,
        }) {
            let named = spec_addresses(gw);
            if named.is_empty() {
                wanting.push((key, gw));
            } else {
                taken.extend(named);
            }
        }
        let wanted: BTreeSet<&ObjectKey> = wanting.iter().map(|(k, _)| *k).collect();
        self.assigned
            .retain(|k, ip| wanted.contains(k) && !taken.contains(ip));
        taken.extend(self.assigned.values().copied());
        let mut next = self.first;
        for (key, _) in wanting {
            if self.assigned.contains_key(key) {
                continue;
            }
            while next <= self.last && taken.contains(&to_ip(next, self.ipv6)) {
                next += 1;
            }
            if next > self.last {
                break; // exhausted: the rest say AddressNotAssigned
            }
            let ip = to_ip(next, self.ipv6);
            taken.insert(ip);
            self.assigned.insert(key.clone(), ip);
        }
        Addressing {
            pool: true,
            assigned: self.assigned.clone(),
        }
    }
}

fn to_ip(value: u128, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(value))
    } else {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    }
}

/// The addresses of this translation's Gateways: what the pool gave (none without a pool).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Addressing {
    /// Whether a pool is configured: without one, a Gateway without `spec.addresses` binds
    /// every interface; with one, it waits for a pool address.
    pub pool: bool,
    pub assigned: BTreeMap<ObjectKey, IpAddr>,
}

/// Where one Gateway listens.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Binds {
    /// Every interface: no pool and no `spec.addresses`.
    Everywhere,
    Addresses(Vec<IpAddr>),
    /// The pool has no address left for it: it is not served.
    Unassigned,
    /// It asks for addresses of a type kgw cannot bind (Hostname, NamedAddress, ...): not
    /// accepted, not served.
    Unsupported(Vec<String>),
}

impl Addressing {
    pub(crate) fn binds(&self, key: &ObjectKey, gw: &Gateway) -> Binds {
        let unsupported: Vec<String> = gw
            .spec
            .addresses
            .iter()
            .flatten()
            .filter_map(|a| a.r#type.clone())
            .filter(|t| t != "IPAddress")
            .collect();
        if !unsupported.is_empty() {
            return Binds::Unsupported(unsupported);
        }
        // An IPAddress entry without a value asks for any address (GatewayAddressEmpty): the
        // pool's, or every interface.
        let named = spec_addresses(gw);
        if !named.is_empty() {
            return Binds::Addresses(named);
        }
        match self.assigned.get(key) {
            Some(ip) => Binds::Addresses(vec![*ip]),
            None if self.pool => Binds::Unassigned,
            None => Binds::Everywhere,
        }
    }
}

/// The IPAddress values of `spec.addresses`, sorted, each once.
fn spec_addresses(gw: &Gateway) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = gw
        .spec
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.r#type.as_deref().unwrap_or("IPAddress") == "IPAddress")
        .filter_map(|a| a.value.as_deref()?.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What `status.addresses` says of a Gateway that binds every interface: both unspecified
/// addresses, since one dual-stack socket takes IPv4 and IPv6 connections to any local address.
pub const EVERY_INTERFACE: [&str; 2] = ["0.0.0.0", "::"];

/// Writes `status.addresses` of every Gateway that has a status, and marks a Gateway the pool
/// had no address for as not Programmed (AddressNotAssigned, Gateway API's reason).
pub(crate) fn write_statuses(
    resources: &Resources,
    addressing: &Addressing,
    statuses: &mut Statuses,
    now: &str,
) {
    for (key, object) in objects(resources, Kind::Gateway) {
        let Object::Gateway(gw) = object else { continue };
        let Some(Value::Object(status)) = statuses.get_mut(key) else {
            continue;
        };
        let address = |value: String| json_object([("type", "IPAddress".into()), ("value", value.into())]);
        let addresses: Vec<Value> = match addressing.binds(key, gw) {
            Binds::Everywhere => EVERY_INTERFACE.iter().map(|a| address(a.to_string())).collect(),
            Binds::Addresses(ips) => ips.iter().map(|ip| address(ip.to_string())).collect(),
            Binds::Unsupported(types) => {
                let message = format!(
                    "spec.addresses: kgw binds IPAddress addresses only, not {}: remove those addresses \
                     or give IP addresses",
                    types.join(", ")
                );
                if let Some(Value::Array(conditions)) = status.get_mut("conditions") {
                    crate::replace_condition(
                        conditions,
                        condition("Accepted", false, "UnsupportedAddress", &message, now),
                    );
                    crate::replace_condition(
                        conditions,
                        condition("Programmed", false, "Invalid", &message, now),
                    );
                }
                Vec::new()
            }
            Binds::Unassigned => {
                let message = "the address pool (kgw run --gateway-address-pool) has no free address: \
                               delete a Gateway, widen the pool, or set spec.addresses";
                if let Some(Value::Array(conditions)) = status.get_mut("conditions") {
                    crate::replace_condition(
                        conditions,
                        condition("Programmed", false, "AddressNotAssigned", message, now),
                    );
                }
                Vec::new()
            }
        };
        status.insert("addresses".into(), Value::Array(addresses));
    }
}

/// Whether a Gateway whose status is `status` listens on `ip` (an unspecified address: every
/// interface), by its `status.addresses`.
pub(crate) fn binds_at(status: &Value, ip: IpAddr) -> bool {
    let said: Vec<&str> = status
        .get("addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("value").and_then(Value::as_str))
        .collect();
    if ip.is_unspecified() {
        EVERY_INTERFACE.iter().all(|a| said.contains(a))
    } else {
        said.iter().any(|a| a.parse::<IpAddr>() == Ok(ip))
    }
}

/// One bind of the data plane: a port on one address (None: every interface).
type Bind = (u16, Option<IpAddr>);

/// What the Gateway listeners bound at one address and port bring.
#[derive(Default)]
struct BindDraft<'a> {
    gateways: BTreeSet<&'a ObjectKey>,
    https: bool,
    certificates: Vec<ServerCertificate>,
    /// The hostnames of the programmed Gateway listeners bound here (listener isolation).
    hostnames: Vec<Option<String>>,
}

/// The data plane's listeners: one per (address, port) some Gateway listener binds, with the
/// routes of the Gateways bound there. A port with one bind keeps the name `listener~PORT`;
/// otherwise each is `listener~ADDRESS~PORT` (`listener~PORT` for the every-interface one).
pub(crate) fn listeners(
    gw_listeners: &[GatewayListener],
    candidates: &mut Candidates,
    addressing: &Addressing,
) -> Vec<Listener> {
    let mut binds: BTreeMap<Bind, BindDraft> = BTreeMap::new();
    for gl in gw_listeners {
        let Ok(port) = u16::try_from(gl.spec().port) else {
            continue;
        };
        if gl.conflict.is_some() {
            continue;
        }
        let addresses: Vec<Option<IpAddr>> = match addressing.binds(gl.gateway, gl.gw) {
            Binds::Everywhere => vec![None],
            Binds::Addresses(ips) => ips.into_iter().map(Some).collect(),
            Binds::Unassigned | Binds::Unsupported(_) => continue,
        };
        for address in addresses {
            let draft = binds.entry((port, address)).or_default();
            draft.gateways.insert(gl.gateway);
            if gl.spec().protocol == "HTTPS" {
                draft.https = true;
            }
            if let Some(Ok(c)) = &gl.certificate {
                draft.certificates.push(c.clone());
            }
            if gl.programmed() {
                draft.hostnames.push(gl.spec().hostname.clone());
            }
        }
    }
    let mut per_port: BTreeMap<u16, usize> = BTreeMap::new();
    // How many binds of each port each Gateway has (more than one: several spec.addresses).
    let mut binds_of: BTreeMap<(u16, ObjectKey), usize> = BTreeMap::new();
    for ((port, _), draft) in &binds {
        *per_port.entry(*port).or_default() += 1;
        for gateway in &draft.gateways {
            *binds_of.entry((*port, (*gateway).clone())).or_default() += 1;
        }
    }
    binds
        .into_iter()
        .map(|((port, address), draft)| {
            let name = match address {
                Some(ip) if per_port[&port] > 1 => format!("listener~{ip}~{port}"),
                _ => format!("listener~{port}"),
            };
            // The candidates of every Gateway bound here (a Gateway with several addresses
            // brings its own to each).
            let mut found = Vec::new();
            for gateway in &draft.gateways {
                let at = (port, (*gateway).clone());
                let left = binds_of.get_mut(&at).map(|n| {
                    *n -= 1;
                    *n
                });
                match left {
                    // Its last bind on this port: its candidates move, no copy.
                    Some(0) => found.extend(candidates.remove(&at).unwrap_or_default()),
                    _ => found.extend(candidates.get(&at).into_iter().flatten().cloned()),
                }
            }
            let mut virtual_hosts = crate::routes::virtual_hosts(&name, found);
            crate::listener_isolation::add_listener_hosts(
                &name,
                &mut virtual_hosts,
                &draft.hostnames,
                snapshot::sort_virtual_hosts,
            );
            // An HTTPS port whose every certificate is unusable still listens, and fails each
            // handshake, rather than answer in plain text on a port meant for TLS.
            let tls = draft.https.then(|| {
                let mut certificates = draft.certificates;
                crate::listener_tls::sort(&mut certificates);
                ListenerTls { certificates }
            });
            Listener {
                name,
                port,
                addresses: address.into_iter().collect(),
                virtual_hosts,
                tls,
                connection: Default::default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::Gateway,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn gateways(names_and_addresses: &[(&str, Option<&str>)]) -> Resources {
        let mut text = String::new();
        for (i, (name, address)) in names_and_addresses.iter().enumerate() {
            let addresses = address
                .map(|a| format!("  addresses:\n  - value: {a}\n"))
                .unwrap_or_default();
            text.push_str(&format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
                 creationTimestamp: \"2026-01-01T00:00:{i:02}Z\"\nspec:\n  gatewayClassName: kgateway\n{addresses}  \
                 listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n"
            ));
        }
        api::parse_manifests(&text, "test")
            .expect("valid")
            .into_iter()
            .map(|o| (o.key(), o.into()))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pools_give_hosts_as_python_does() {
        let pool = AddressPool::parse("127.0.10.0/24").unwrap();
        assert_eq!(to_ip(pool.first, false), ip("127.0.10.1"));
        assert_eq!(to_ip(pool.last, false), ip("127.0.10.254"));
        let one = AddressPool::parse("10.0.0.7/32").unwrap();
        assert_eq!((one.first, one.last), (one.first, one.first));
        let v6 = AddressPool::parse("fd00::/126").unwrap();
        assert_eq!(to_ip(v6.first, true), ip("fd00::1"));
        assert_eq!(to_ip(v6.last, true), ip("fd00::3"));
        assert!(
            AddressPool::parse("127.0.10.1/24")
                .unwrap_err()
                .contains("127.0.10.0/24")
        );
        assert!(AddressPool::parse("127.0.10.0").is_err());
        assert!(AddressPool::parse("127.0.10.0/33").is_err());
    }

    #[test]
    fn addresses_are_given_oldest_first_and_kept() {
        let mut pool = AddressPool::parse("127.0.10.0/30").unwrap();
        let both = gateways(&[("a", None), ("b", None)]);
        let given = pool.assign(&both);
        assert_eq!(given.assigned[&key("a")], ip("127.0.10.1"));
        assert_eq!(given.assigned[&key("b")], ip("127.0.10.2"));
        // a goes; b keeps its address, c takes the lowest free one.
        let later = gateways(&[("b", None), ("c", None)]);
        let given = pool.assign(&later);
        assert_eq!(given.assigned[&key("b")], ip("127.0.10.2"));
        assert_eq!(given.assigned[&key("c")], ip("127.0.10.1"));
        // The pool (two addresses) is full: d gets none and is not served.
        let full = gateways(&[("b", None), ("c", None), ("d", None)]);
        let given = pool.assign(&full);
        assert_eq!(given.assigned.get(&key("d")), None);
        let Some(Object::Gateway(d)) = full.get(&key("d")).map(|o| &**o) else {
            panic!("d")
        };
        assert_eq!(given.binds(&key("d"), d), Binds::Unassigned);
    }

    #[test]
    fn an_address_named_in_spec_is_never_given_to_another() {
        let mut pool = AddressPool::parse("127.0.10.0/29").unwrap();
        let given = pool.assign(&gateways(&[("a", None), ("fixed", Some("127.0.10.1"))]));
        assert_eq!(given.assigned[&key("a")], ip("127.0.10.2"));
        assert_eq!(given.assigned.get(&key("fixed")), None);
    }
}

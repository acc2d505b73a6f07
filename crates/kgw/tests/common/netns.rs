//! A backend host of the test's own: a network namespace joined to the root namespace by a
//! veth pair, with addresses in a /30 used by nobody else. A blackhole route inside it drops its
//! replies to the gateway: the backend vanishes without FIN or RST. Everything is removed when
//! the guard drops, pass or fail.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

static NEXT: AtomicU8 = AtomicU8::new(1);

pub struct BackendHost {
    pub name: String,
    host_veth: String,
    /// The root namespace's side (where the gateway is).
    pub gateway_ip: Ipv4Addr,
    /// The backend's address.
    pub backend_ip: Ipv4Addr,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's ip is installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl BackendHost {
    pub fn new() -> BackendHost {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let name = format!("kgwt{tag}");
        let host_veth = format!("kgw{tag}a");
        let peer_veth = format!("kgw{tag}b");
        let gateway_ip = Ipv4Addr::new(10, 213, n, 1);
        let backend_ip = Ipv4Addr::new(10, 213, n, 2);
        // Leftovers of an earlier run that was killed: remove before reuse.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_veth]).output();
        let host = BackendHost {
            name: name.clone(),
            host_veth: host_veth.clone(),
            gateway_ip,
            backend_ip,
            children: Vec::new(),
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &peer_veth,
        ]);
        ip(&["link", "set", &peer_veth, "netns", &name]);
        ip(&["addr", "add", &format!("{gateway_ip}/30"), "dev", &host_veth]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{backend_ip}/30"),
            "dev",
            &peer_veth,
        ]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &peer_veth, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        host
    }

    /// Starts `program args` inside the namespace; it is killed when the guard drops.
    pub fn spawn(&mut self, program: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a process in the namespace");
        self.children.push(child);
    }

    /// The backend's replies to the gateway are dropped silently from now on.
    pub fn blackhole(&self) {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.gateway_ip),
        ]);
    }

    pub fn lift(&self) {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "route",
            "del",
            "blackhole",
            &format!("{}/32", self.gateway_ip),
        ]);
    }

    /// Removes everything and checks nothing is left.
    pub fn close(mut self) {
        self.cleanup();
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&self.name),
            "namespace {} left behind",
            self.name
        );
        let link = Command::new("ip")
            .args(["link", "show", &self.host_veth])
            .output()
            .unwrap();
        assert!(!link.status.success(), "veth {} left behind", self.host_veth);
    }

    fn cleanup(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        // Deleting the namespace deletes the peer, and with it this end; make sure.
        let _ = Command::new("ip").args(["link", "del", &self.host_veth]).output();
    }
}

impl Drop for BackendHost {
    fn drop(&mut self) {
        self.cleanup();
    }
}

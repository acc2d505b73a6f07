//! Reads the TCP keepalive options of the gateway's real upstream sockets, from outside the
//! gateway: find the socket inodes connected to the backend's port in /proc/PID/net/tcp{,6},
//! map them to the process's file descriptors, duplicate each one into the test with
//! pidfd_getfd(2) and ask the kernel (getsockopt) what is set.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    pub local_port: u16,
    pub enabled: bool,
    pub idle_secs: u64,
    pub interval_secs: u64,
    pub probes: u32,
    /// TCP_USER_TIMEOUT in milliseconds (0: not set).
    pub user_timeout_ms: u128,
}

/// Established connections of process `pid` whose remote port is `remote_port`.
pub fn upstream_keepalive(pid: u32, remote_port: u16) -> Vec<Keepalive> {
    let inodes = established_to(pid, remote_port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let fds = socket_fds(pid);
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as libc::c_int;
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut out = Vec::new();
    for (inode, local_port) in inodes {
        let Some(&target) = fds.get(&inode) else { continue };
        let fd = unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                target,
                0,
            )
        } as libc::c_int;
        if fd < 0 {
            // the connection closed between the two reads
            continue;
        }
        let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        out.push(Keepalive {
            local_port,
            enabled: socket.keepalive().unwrap(),
            idle_secs: socket.tcp_keepalive_time().unwrap().as_secs(),
            interval_secs: socket.tcp_keepalive_interval().unwrap().as_secs(),
            probes: socket.tcp_keepalive_retries().unwrap(),
            user_timeout_ms: socket
                .tcp_user_timeout()
                .unwrap()
                .map(|d| d.as_millis())
                .unwrap_or(0),
        });
    }
    out.sort_by_key(|k| k.local_port);
    out
}

/// (inode, local port) of ESTABLISHED sockets whose remote port is `port`.
fn established_to(pid: u32, port: u16) -> Vec<(u64, u16)> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let port_of = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port_of(f[2]) == Some(port)
                && let (Some(local), Ok(inode)) = (port_of(f[1]), f[9].parse::<u64>())
                && inode != 0
            {
                out.push((inode, local));
            }
        }
    }
    out
}

/// socket inode -> fd number in process `pid`.
fn socket_fds(pid: u32) -> HashMap<u64, i32> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
            && let (Ok(inode), Ok(fd)) = (
                inode.parse::<u64>(),
                entry.file_name().to_string_lossy().parse::<i32>(),
            )
        {
            // the cluster keeps a duplicate fd of each upstream socket: either one will do
            out.entry(inode).or_insert(fd);
        }
    }
    out
}

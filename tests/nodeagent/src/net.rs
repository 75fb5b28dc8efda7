//! Pod networking, isolated to this machine.
//!
//! The arrangement: one Linux bridge on the host per agent run, holding
//! `10.X.0.1/16` (X picked so that no route of the host overlaps
//! `10.X.0.0/16`, 244 first). Node `i` hands out `10.X.(i+1).0/24`; each
//! pod gets a network namespace whose `eth0` (a veth whose other end is on
//! the bridge) holds its address, with the prefix of the whole /16 and no
//! default route. So the host reaches every pod IP through the bridge's
//! connected route (the proxies and tests run on the host), pods reach each
//! other and the host's bridge address, and nothing else: there is no
//! gateway, no NAT, and forwarding is left as it is, so no packet for the
//! pod range can leave the machine. A bridge on the host (rather than the
//! whole test cluster inside one network namespace) keeps `eval "$(up)"`,
//! kubectl and the test binaries in the host's own namespace, untouched.
//!
//! Every name starts with a per-run prefix, `wn<agent pid in hex>-`, so a
//! sweeper at start can remove what a killed agent left behind (names whose
//! pid is no longer a `weir-node-agent`) without touching a live run's.
//!
//! Pure: names, ranges, the sweeper's choice. I/O: [`Ip`] runs `ip`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;

/// The process name a live agent has (`/proc/<pid>/comm`, 15 characters).
pub const AGENT_COMM: &str = "weir-node-agent";
/// The second octets tried for the pod range, in order.
const RANGE_OCTETS: std::ops::RangeInclusive<u8> = 244..=254;

/// A failed `ip` command, or no pod range left.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `ip` failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// The arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// `ip` could not be run at all.
    #[error("running `ip` (iproute2; the node agent needs it and root): {0}")]
    Spawn(std::io::Error),
    /// Every candidate /16 overlaps a route of this host.
    #[error(
        "no free pod range: every 10.X.0.0/16 for X in 244..=254 overlaps a route of this host"
    )]
    NoRange,
    /// A node has no free address left.
    #[error("node {0} has no free pod address (253 per node)")]
    Exhausted(usize),
}

/// The per-run names: `wn<pid hex>-br`, `-p<n>` (netns), `-v<n>` (host veth).
/// Interface names must fit in 15 bytes: 2 + 6 hex + 1 + 1 + 5 base-36 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// The names of the agent with process id `pid`.
    pub fn new(pid: u32) -> Names {
        Names {
            prefix: format!("wn{pid:x}-"),
        }
    }

    /// The bridge.
    pub fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The network namespace of pod number `n`.
    pub fn netns(&self, n: u32) -> String {
        format!("{}p{}", self.prefix, base36(n))
    }

    /// The host end of pod number `n`'s veth.
    pub fn veth(&self, n: u32) -> String {
        format!("{}v{}", self.prefix, base36(n))
    }
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// The pid in an agent-made name (`wn<hex>-...`), if it is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("wn")?;
    let (hex, _) = rest.split_once('-')?;
    if hex.is_empty() {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Names (links or namespaces) left by agents that are gone, given whether
/// the agent with a pid is alive.
pub fn stale<'a>(names: &[&'a str], alive: impl Fn(u32) -> bool) -> Vec<&'a str> {
    names
        .iter()
        .copied()
        .filter(|n| owner_pid(n).is_some_and(|pid| !alive(pid)))
        .collect()
}

/// Interface names in `ip -o link show` output (`12: name@peer: <...>`).
pub fn link_names(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split([':', '@']).next())
        .collect()
}

/// Namespace names in `ip netns list` output (`name (id: 3)`).
pub fn netns_names(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// The first `10.X.0.0/16` that overlaps no destination in `ip -4 route
/// show` output (the default route aside): the pod range of this run.
pub fn free_range(routes: &str) -> Option<u8> {
    let taken: Vec<(u32, u32)> = routes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|dest| *dest != "default")
        .filter_map(|dest| {
            let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
            let addr: Ipv4Addr = addr.parse().ok()?;
            let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Some((u32::from(addr) & mask, mask))
        })
        .collect();
    RANGE_OCTETS.into_iter().find(|x| {
        let net = u32::from(Ipv4Addr::new(10, *x, 0, 0));
        let mask = u32::MAX << 16;
        // Two prefixes overlap when they agree on the shorter one's bits.
        taken.iter().all(|(t, tmask)| {
            let common = mask & tmask;
            net & common != t & common
        })
    })
}

/// The pod range of a run and its per-node subnets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRange {
    octet: u8,
    used: Vec<BTreeSet<u8>>,
    /// Per node, the last address handed out: the next search starts after
    /// it, so a freed address is not reused at once (as host-local IPAM
    /// does), and a terminating pod's IP is not a new pod's a moment later.
    last: Vec<u8>,
}

impl PodRange {
    /// `10.<octet>.0.0/16`, split into `nodes` /24s.
    pub fn new(octet: u8, nodes: usize) -> PodRange {
        PodRange {
            octet,
            used: vec![BTreeSet::new(); nodes],
            last: vec![1; nodes],
        }
    }

    /// The host's address on the bridge (`10.X.0.1`), with prefix 16.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 0, 1)
    }

    /// Node `i`'s subnet, `10.X.(i+1).0/24` (for `spec.podCIDR`).
    pub fn node_cidr(&self, node: usize) -> String {
        format!("10.{}.{}.0/24", self.octet, node + 1)
    }

    /// The next free address of node `i` (`.2` to `.254`) after the last
    /// one handed out, wrapping around; taken.
    pub fn allocate(&mut self, node: usize) -> Result<Ipv4Addr, NetError> {
        let third = u8::try_from(node + 1).map_err(|_| NetError::Exhausted(node))?;
        let (Some(used), Some(last)) = (self.used.get_mut(node), self.last.get_mut(node)) else {
            return Err(NetError::Exhausted(node));
        };
        let host = (*last + 1..=254)
            .chain(2..=*last)
            .find(|h| !used.contains(h))
            .ok_or(NetError::Exhausted(node))?;
        used.insert(host);
        *last = host;
        Ok(Ipv4Addr::new(10, self.octet, third, host))
    }

    /// Gives `ip` back to node `i`.
    pub fn release(&mut self, node: usize, ip: Ipv4Addr) {
        if let Some(used) = self.used.get_mut(node) {
            used.remove(&ip.octets()[3]);
        }
    }
}

/// Runs `ip` (iproute2).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ip;

impl Ip {
    /// `ip <args>`; its stdout, or its stderr as the error.
    pub async fn run(&self, args: &[&str]) -> Result<String, NetError> {
        let out = tokio::process::Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(NetError::Spawn)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NetError::Ip {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Creates the bridge with the host's address on the pod range.
    pub async fn add_bridge(&self, name: &str, ip: Ipv4Addr) -> Result<(), NetError> {
        self.run(&["link", "add", name, "type", "bridge"]).await?;
        self.run(&["addr", "add", &format!("{ip}/16"), "dev", name])
            .await?;
        self.run(&["link", "set", name, "up"]).await?;
        Ok(())
    }

    /// A namespace `netns` whose `eth0` holds `ip/16`, its peer `veth` on
    /// `bridge`; no default route.
    pub async fn add_pod(
        &self,
        netns: &str,
        veth: &str,
        bridge: &str,
        ip: Ipv4Addr,
    ) -> Result<(), NetError> {
        self.run(&["netns", "add", netns]).await?;
        self.run(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])
        .await?;
        self.run(&["link", "set", veth, "master", bridge]).await?;
        self.run(&["link", "set", veth, "up"]).await?;
        self.run(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{ip}/16"),
            "dev",
            "eth0",
        ])
        .await?;
        self.run(&["-n", netns, "link", "set", "eth0", "up"])
            .await?;
        self.run(&["-n", netns, "link", "set", "lo", "up"]).await?;
        Ok(())
    }

    /// Kills whatever still runs in `netns`, then removes the veth and the
    /// namespace. Parts already gone are not an error.
    pub async fn remove_pod(&self, netns: &str, veth: &str) {
        self.kill_all_in(netns).await;
        let _ = self.run(&["link", "del", veth]).await;
        let _ = self.run(&["netns", "del", netns]).await;
    }

    /// SIGKILL to every process in `netns` (a namespace is only freed once
    /// its last process is gone).
    pub async fn kill_all_in(&self, netns: &str) {
        if let Ok(pids) = self.run(&["netns", "pids", netns]).await {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Removes links and namespaces left by agents that are gone; returns
    /// what it removed.
    pub async fn sweep(&self) -> Result<Vec<String>, NetError> {
        let mut removed = Vec::new();
        let netns = self.run(&["netns", "list"]).await?;
        for name in stale(&netns_names(&netns), agent_alive) {
            self.kill_all_in(name).await;
            if self.run(&["netns", "del", name]).await.is_ok() {
                removed.push(name.to_string());
            }
        }
        let links = self.run(&["-o", "link", "show"]).await?;
        for name in stale(&link_names(&links), agent_alive) {
            // A veth may already be gone with its namespace.
            if self.run(&["link", "del", name]).await.is_ok() {
                removed.push(name.to_string());
            }
        }
        Ok(removed)
    }
}

/// Whether `pid` is a running node agent: its name is the agent's and it
/// is not a zombie (a SIGKILLed agent whose parent has not reaped it yet
/// keeps its name).
fn agent_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| running_agent(&stat))
}

/// Whether a `/proc/<pid>/stat` line (`pid (comm) state ...`) is a live agent's.
fn running_agent(stat: &str) -> bool {
    let Some((head, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, c)| c);
    comm == Some(AGENT_COMM)
        && rest
            .split_whitespace()
            .next()
            .is_some_and(|state| state != "Z" && state != "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_an_interface_name() {
        let names = Names::new(4_194_304); // the largest pid_max
        assert_eq!(names.bridge(), "wn400000-br");
        assert_eq!(names.veth(35), "wn400000-vz");
        assert!(names.veth(36u32.pow(5) - 1).len() <= 15);
        assert_eq!(names.netns(36), "wn400000-p10");
        assert_eq!(owner_pid(&names.veth(7)), Some(4_194_304));
        assert_eq!(owner_pid("wnx-br"), None);
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("wn-br"), None);
    }

    #[test]
    fn the_sweeper_takes_only_names_of_dead_agents() {
        let links = "1: lo: <LOOPBACK,UP> mtu 65536\n\
                     2: eth0: <BROADCAST> mtu 1500\n\
                     7: wn1f-br: <BROADCAST,UP> mtu 1500\n\
                     8: wn1f-v0@if2: <BROADCAST> mtu 1500\n\
                     9: wn2a-v0@if2: <BROADCAST> mtu 1500\n";
        let names = link_names(links);
        assert_eq!(names, ["lo", "eth0", "wn1f-br", "wn1f-v0", "wn2a-v0"]);
        assert_eq!(stale(&names, |pid| pid == 0x2a), ["wn1f-br", "wn1f-v0"]);
        let netns = netns_names("wn1f-p0 (id: 0)\nwn2a-p3\nother\n");
        assert_eq!(stale(&netns, |pid| pid == 0x2a), ["wn1f-p0"]);
    }

    #[test]
    fn only_a_live_agent_process_counts_as_alive() {
        assert!(running_agent("4242 (weir-node-agent) S 1 4242 0 0"));
        assert!(
            !running_agent("4242 (weir-node-agent) Z 1 4242 0 0"),
            "a zombie"
        );
        assert!(!running_agent("4242 (bash) S 1 4242 0 0"), "a reused pid");
        assert!(!running_agent(""));
    }

    #[test]
    fn the_pod_range_avoids_every_route_but_the_default() {
        let routes = "default via 192.0.2.1 dev eth0\n\
                      192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2\n";
        assert_eq!(free_range(routes), Some(244));
        let routes = "10.244.0.0/16 dev wn1-br scope link\n10.245.3.0/24 dev x\n";
        assert_eq!(free_range(routes), Some(246));
        assert_eq!(free_range("10.0.0.0/8 dev vpn\n"), None);
        assert_eq!(free_range("10.244.7.9 dev tun0\n"), Some(245));
    }

    #[test]
    fn each_node_hands_out_its_own_slash_24() {
        let mut range = PodRange::new(244, 2);
        assert_eq!(range.bridge_ip(), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(range.node_cidr(1), "10.244.2.0/24");
        let a = range.allocate(0).expect("free");
        let b = range.allocate(0).expect("free");
        let c = range.allocate(1).expect("free");
        assert_eq!(
            (a, b, c),
            (
                Ipv4Addr::new(10, 244, 1, 2),
                Ipv4Addr::new(10, 244, 1, 3),
                Ipv4Addr::new(10, 244, 2, 2)
            )
        );
        range.release(0, a);
        assert_eq!(
            range.allocate(0).expect("free"),
            Ipv4Addr::new(10, 244, 1, 4),
            "a released address is not reused at once"
        );
        for _ in 0..252 {
            range.allocate(1).expect("free");
        }
        assert!(matches!(range.allocate(1), Err(NetError::Exhausted(1))));
        range.release(1, c);
        assert_eq!(
            range.allocate(1).expect("free"),
            c,
            "the search wraps around"
        );
        assert!(range.allocate(5).is_err());
    }
}

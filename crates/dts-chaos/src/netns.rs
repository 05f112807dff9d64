//! Network partitions (root only): each worker runs in a network namespace
//! of its own, joined to the host by a veth pair, and Redis (with its
//! sentinels) and the broker listen on two addresses of their own on the
//! host's `lo`, so a fault can cut one worker off from one of them alone.
//!
//! A cut routes the service's address, inside the worker's namespace,
//! through a neighbour that does not exist (a permanent ARP entry with a
//! MAC address nobody has): the packets leave and are dropped by the host's
//! end of the veth. Connects and sends see nothing but silence, as in a
//! real partition. A `blackhole` route would not do: a connect through one
//! fails at once with EINVAL, which no real network does.
//!
//! Names: namespaces `dts-chaos-PID-N`, host-side veths `dcPIDhN` (inside:
//! `dcPIDwN`), `lo` addresses labelled `lo:dcPID`, so concurrent runs do not
//! meet and a killed run's leftovers are found (its PID is gone) and
//! removed at the next start.

use crate::ChaosError;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// The prefix of every namespace this runner makes.
const NS_PREFIX: &str = "dts-chaos-";
/// The neighbour a cut routes through; nobody has its MAC address.
const NOWHERE: &str = "192.0.2.1";
const NOWHERE_MAC: &str = "02:00:5e:00:de:ad";

/// Which service a partition cuts a worker off from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Redis: its data nodes and sentinels.
    Redis,
    /// The broker.
    Broker,
}

/// The namespaces and addresses of one run; removed when dropped.
#[derive(Debug)]
pub struct Partitions {
    pid: u32,
    /// The third octet of every address of this run (10.77.S.x).
    slot: u8,
    workers: usize,
}

impl Partitions {
    /// Removes a killed run's leftovers, then makes `workers` namespaces
    /// (numbered from 1) and the two service addresses on `lo`.
    pub fn set_up(workers: usize) -> Result<Partitions, ChaosError> {
        remove_leftovers();
        let pid = std::process::id();
        let slot = free_slot(pid)?;
        let partitions = Partitions { pid, slot, workers };
        let label = format!("lo:dc{pid}");
        for host in [partitions.redis_host(), partitions.broker_host()] {
            ip(&[
                "addr",
                "add",
                &format!("{host}/32"),
                "dev",
                "lo",
                "label",
                &label,
            ])?;
        }
        for n in 1..=workers {
            partitions.add_namespace(n)?;
        }
        Ok(partitions)
    }

    /// The address Redis and its sentinels listen on.
    pub fn redis_host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.slot, 1)
    }

    /// The address the broker listens on.
    pub fn broker_host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.slot, 2)
    }

    /// Worker `n`'s namespace, for `setns`.
    pub fn namespace_path(&self, n: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(self.namespace(n))
    }

    /// Cuts worker `n` off from `what` until [`Partitions::heal`].
    pub fn cut(&self, n: usize, what: Cut) -> Result<(), ChaosError> {
        let (ns, inside, to) = (self.namespace(n), self.veth(n, 'w'), self.address(what));
        ip(&[
            "-n", &ns, "route", "add", &to, "via", NOWHERE, "dev", &inside, "onlink",
        ])
    }

    /// Ends the cut.
    pub fn heal(&self, n: usize, what: Cut) -> Result<(), ChaosError> {
        ip(&[
            "-n",
            &self.namespace(n),
            "route",
            "del",
            &self.address(what),
        ])
    }

    fn address(&self, what: Cut) -> String {
        let host = match what {
            Cut::Redis => self.redis_host(),
            Cut::Broker => self.broker_host(),
        };
        format!("{host}/32")
    }

    fn namespace(&self, n: usize) -> String {
        format!("{NS_PREFIX}{}-{n}", self.pid)
    }

    fn veth(&self, n: usize, side: char) -> String {
        format!("dc{}{side}{n}", self.pid)
    }

    /// Worker `n`'s namespace: `lo` up, a /30 on the veth pair (10.77.S.4n+1
    /// on the host, 4n+2 inside), the host its default route, and the
    /// neighbour that swallows cut traffic.
    fn add_namespace(&self, n: usize) -> Result<(), ChaosError> {
        let (ns, host, inside) = (self.namespace(n), self.veth(n, 'h'), self.veth(n, 'w'));
        let base = 4 * n as u8;
        let host_ip = Ipv4Addr::new(10, 77, self.slot, base + 1);
        let inside_ip = Ipv4Addr::new(10, 77, self.slot, base + 2);
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &inside, "netns", &ns,
        ])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{inside_ip}/30"),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &host_ip.to_string(),
        ])?;
        ip(&[
            "-n",
            &ns,
            "neigh",
            "add",
            NOWHERE,
            "lladdr",
            NOWHERE_MAC,
            "dev",
            &inside,
            "nud",
            "permanent",
        ])
    }
}

impl Drop for Partitions {
    fn drop(&mut self) {
        remove_run(self.pid, self.workers);
    }
}

/// Runs `ip ARGS`; an error names the command and what it said.
fn ip(args: &[&str]) -> Result<(), ChaosError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| ChaosError::Spawn {
            what: "ip".to_string(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ChaosError::Network(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The first slot from the PID on whose addresses nothing is: another run
/// may be using its own.
fn free_slot(pid: u32) -> Result<u8, ChaosError> {
    let taken = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    (0..250u32)
        .map(|i| ((pid + i) % 250 + 1) as u8)
        .find(|slot| !taken.contains(&format!(" 10.77.{slot}.")))
        .ok_or_else(|| ChaosError::Network("no free 10.77.S.0/24 for partitions".into()))
}

/// Removes every namespace, veth and `lo` address of runs whose process is
/// gone.
fn remove_leftovers() {
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let mut dead: Vec<u32> = listed
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix(NS_PREFIX))
        .filter_map(|rest| rest.split('-').next()?.parse().ok())
        .collect();
    let labels = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    dead.extend(labels.lines().filter_map(|line| {
        words_of(line)
            .find_map(|word| word.strip_prefix("lo:dc"))
            .and_then(|pid| pid.parse::<u32>().ok())
    }));
    dead.sort_unstable();
    dead.dedup();
    for pid in dead {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_run(pid, 9);
        }
    }
}

/// Deletes run `pid`'s namespaces and host veths (numbers 1 to `workers`;
/// a socket left in a namespace keeps it alive, so its veth is deleted
/// apart) and its `lo` addresses. Errors are ignored: most are for what a
/// half-made run never made.
fn remove_run(pid: u32, workers: usize) {
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip").args(args).output();
    };
    for n in 1..=workers {
        quiet(&["link", "del", &format!("dc{pid}h{n}")]);
        quiet(&["netns", "del", &format!("{NS_PREFIX}{pid}-{n}")]);
    }
    let labels = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let label = format!("lo:dc{pid}");
    for line in labels.lines() {
        let words: Vec<&str> = words_of(line).collect();
        if words.contains(&label.as_str()) {
            if let Some(address) = words
                .iter()
                .position(|word| *word == "inet")
                .and_then(|at| words.get(at + 1))
            {
                quiet(&["addr", "del", address, "dev", "lo"]);
            }
        }
    }
}

/// The words of a line of `ip -o addr`, which ends the label with a `\`.
fn words_of(line: &str) -> impl Iterator<Item = &str> {
    line.split_whitespace()
        .map(|word| word.trim_end_matches('\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_lo_addresses_are_found_by_their_label_in_ip_o_addr_output() {
        let line = "1: lo    inet 10.77.128.1/32 scope global lo:dc16377\\       valid_lft forever preferred_lft forever";
        let words: Vec<&str> = words_of(line).collect();
        assert!(words.contains(&"lo:dc16377"), "{words:?}");
        assert_eq!(
            words.iter().find_map(|word| word.strip_prefix("lo:dc")),
            Some("16377")
        );
    }
}

//! Network namespaces for tests and chaos runs that cut the network: each member gets its own namespace and
//! address on a bridge inside a private "switch" namespace; the test process reaches them
//! through one veth into that switch.
//!
//! Partitioning moves the cut-off members' bridge ports onto a second bridge: their packets to
//! the others are dropped (no route, no ARP answer), for Raft and every other protocol alike.
//! Needs root; everything created is deleted on drop.

use std::process::Command;

/// A set of namespaces with one address each.
pub struct Lab {
    tag: String,
    subnet: u8,
    hosts: Vec<String>,
    switch: String,
}

/// Runs `program` with `args`; its error output when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program} {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn tc(args: &[&str]) -> Result<(), String> {
    run("tc", args)
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("network lab setup failed: {e}");
    }
}

fn subnet_in_use(n: u8) -> bool {
    let out = Command::new("ip").args(["-o", "-4", "addr"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).contains(&format!(" 10.{n}.0."))
}

impl Lab {
    /// Creates `n` member namespaces; panics when it cannot (tests).
    pub fn new(n: usize) -> Lab {
        assert!(crate::is_root(), "network namespaces need root");
        Lab::create(n).unwrap_or_else(|e| panic!("network lab setup failed: {e}"))
    }

    /// Creates `n` member namespaces, or says why it could not (what was made is removed).
    pub fn create(n: usize) -> Result<Lab, String> {
        if !crate::is_root() {
            return Err("network namespaces need root".into());
        }
        let pid = std::process::id();
        let tag = format!("{}", pid % 1_000_000);
        let subnet = (0..200u32)
            .map(|i| (100 + ((pid + i) % 150)) as u8)
            .find(|s| !subnet_in_use(*s))
            .ok_or("no free 10.x.0.0/24 subnet for the lab")?;
        let switch = format!("pgqsw{tag}");
        let lab = Lab {
            tag: tag.clone(),
            subnet,
            hosts: (0..n).map(|i| format!("pgq{tag}m{i}")).collect(),
            switch,
        };
        ip(&["netns", "add", &lab.switch])?;
        for br in ["br0", "br1"] {
            ip(&["-n", &lab.switch, "link", "add", br, "type", "bridge"])?;
            ip(&["-n", &lab.switch, "link", "set", br, "up"])?;
        }
        let host_if = format!("pgqh{tag}");
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", "ph", "netns", &lab.switch])?;
        ip(&["addr", "add", &format!("10.{subnet}.0.1/24"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", &lab.switch, "link", "set", "ph", "master", "br0"])?;
        ip(&["-n", &lab.switch, "link", "set", "ph", "up"])?;
        for (i, ns) in lab.hosts.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let port = format!("p{i}");
            ip(&[
                "-n",
                &lab.switch,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ])?;
            ip(&["-n", &lab.switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &lab.switch, "link", "set", &port, "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{}/24", lab.ip(i)), "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    /// Member `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.subnet, 10 + i)
    }

    /// Member `i`'s namespace name.
    pub fn ns(&self, i: usize) -> String {
        self.hosts[i].clone()
    }

    /// Cuts members `cut` off from everyone else (they can still reach each other).
    pub fn partition(&self, cut: &[usize]) {
        for &i in cut {
            must(&["-n", &self.switch, "link", "set", &format!("p{i}"), "master", "br1"]);
        }
    }

    /// Cuts members `cut` off from everyone else, like `partition`, but this machine (the
    /// harness, the workload's clients) still reaches them, through a second link into the
    /// cut-off side and a host route per cut member: an isolated primary keeps serving its
    /// clients. `heal` undoes it.
    pub fn isolate_from_peers(&self, cut: &[usize]) -> Result<(), String> {
        let side = format!("pgqk{}", self.tag);
        let exists =
            Command::new("ip").args(["link", "show", &side]).output().is_ok_and(|o| o.status.success());
        if !exists {
            ip(&["link", "add", &side, "type", "veth", "peer", "name", "pk", "netns", &self.switch])?;
            ip(&["-n", &self.switch, "link", "set", "pk", "master", "br1"])?;
            ip(&["-n", &self.switch, "link", "set", "pk", "up"])?;
            ip(&["link", "set", &side, "up"])?;
        }
        let src = format!("10.{}.0.1", self.subnet);
        for &i in cut {
            ip(&["route", "replace", &format!("{}/32", self.ip(i)), "dev", &side, "src", &src])?;
        }
        for &i in cut {
            ip(&["-n", &self.switch, "link", "set", &format!("p{i}"), "master", "br1"])?;
        }
        self.forget_neighbours();
        Ok(())
    }

    /// Drops every learned link-layer address, here and in each member: after a port moved
    /// between bridges an address learned on the other side would otherwise keep being used
    /// (for up to 45 s, Linux's reachable time) and the harness would lose a member it should
    /// reach.
    fn forget_neighbours(&self) {
        for dev in [format!("pgqh{}", self.tag), format!("pgqk{}", self.tag)] {
            let _ = ip(&["neigh", "flush", "dev", &dev]);
        }
        for ns in &self.hosts {
            let _ = ip(&["-n", ns, "neigh", "flush", "all"]);
        }
    }

    /// Makes member `i`'s link slow, both ways: at most `kbit` kbit/s with up to `queue_ms` of
    /// queue (a token-bucket filter, `tc tbf`), so its packets wait in the queue and, once the
    /// queue is full, are dropped: delay and loss on one link. `heal` undoes it. (The closest
    /// to `tc netem` on kernels without `sch_netem`.)
    pub fn slow_link(&self, i: usize, kbit: u32, queue_ms: u32) -> Result<(), String> {
        let (rate, latency) = (format!("{kbit}kbit"), format!("{queue_ms}ms"));
        let tbf = ["root", "tbf", "rate", &rate, "burst", "1600", "latency", &latency];
        for (ns, dev) in [(self.switch.clone(), format!("p{i}")), (self.hosts[i].clone(), "eth0".to_string())]
        {
            tc(&[&["-n", &ns, "qdisc", "replace", "dev", &dev][..], &tbf[..]].concat())?;
        }
        Ok(())
    }

    /// Reconnects everyone.
    pub fn heal(&self) {
        for i in 0..self.hosts.len() {
            let _ = tc(&["-n", &self.switch, "qdisc", "del", "dev", &format!("p{i}"), "root"]);
            let _ = tc(&["-n", &self.hosts[i], "qdisc", "del", "dev", "eth0", "root"]);
        }
        for i in 0..self.hosts.len() {
            let _ = ip(&["route", "del", &format!("{}/32", self.ip(i)), "dev", &format!("pgqk{}", self.tag)]);
        }
        for i in 0..self.hosts.len() {
            must(&["-n", &self.switch, "link", "set", &format!("p{i}"), "master", "br0"]);
        }
        self.forget_neighbours();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
        let _ = ip(&["link", "del", &format!("pgqh{}", self.tag)]);
    }
}

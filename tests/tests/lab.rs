//! The network lab every partition test relies on: a member cut off from its peers with
//! `isolate_from_peers` stays reachable from the harness at once, and is reachable the normal
//! way again right after `heal`. Moving a member's port between bridges changes which
//! link-layer address answers for the harness; a member that kept the old one would drop the
//! harness's connections for up to 45 s (a chaos run once lost its writer this way).

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgquorum_chaos::lab::Lab;

/// A TCP listener inside member `i`'s namespace, accepting and closing connections.
struct Listener(Child);

impl Listener {
    fn start(lab: &Lab, i: usize, port: u16) -> Listener {
        let script = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{}', {port}))\ns.listen(16)\nprint('ready', flush=True)\n\
             while True:\n    c, _ = s.accept()\n    c.close()\n",
            lab.ip(i)
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(i), "python3", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 in a namespace");
        let mut l = Listener(child);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(l.0.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("listener output");
        assert_eq!(line.trim(), "ready", "the listener did not start");
        l
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects within one second, or says how long it tried.
fn reachable(addr: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map(drop)
        .map_err(|e| format!("{addr} unreachable after {:?}: {e}", start.elapsed()))
}

#[test]
fn the_harness_reaches_an_isolated_member_at_once_and_again_right_after_heal() {
    if !pgquorum_tests::bins::netns_available() {
        return;
    }
    let lab = Lab::new(2);
    let _listener = Listener::start(&lab, 0, 5432);
    let addr: SocketAddr = format!("{}:5432", lab.ip(0)).parse().expect("address");
    for round in 1..=3 {
        reachable(addr).unwrap_or_else(|e| panic!("round {round}, before the cut: {e}"));
        lab.isolate_from_peers(&[0]).expect("isolate");
        reachable(addr).unwrap_or_else(|e| panic!("round {round}, isolated: {e}"));
        lab.heal();
        reachable(addr).unwrap_or_else(|e| panic!("round {round}, healed: {e}"));
    }
}

//! The fence guard: a separate process (`pgquorum-fence-guard`, or the agent binary run as
//! `pgquorum-agent fence-guard` when that executable is missing) that kills the primary's Postgres at the lease deadline even when the agent is frozen
//! (SIGSTOP) or dead. The agent arms it with every renewal and disarms it on demotion.
//!
//! Protocol on stdin, one line per command: `arm <postmaster-pid> <fire-at>` where fire-at is
//! CLOCK_MONOTONIC in nanoseconds (shared by every process on the machine), `disarm`, or EOF
//! (the agent exited: an armed guard still fires at its time, then exits).

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use super::kill::kill_instance;

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

enum Cmd {
    Arm { pid: u32, fire_at: u64 },
    Disarm,
    Eof,
}

fn parse(line: &str) -> Option<Cmd> {
    let mut parts = line.split_whitespace();
    match parts.next()? {
        "arm" => Some(Cmd::Arm { pid: parts.next()?.parse().ok()?, fire_at: parts.next()?.parse().ok()? }),
        "disarm" => Some(Cmd::Disarm),
        _ => None,
    }
}

/// Runs the guard for the instance in `data` until stdin closes and nothing is armed.
pub fn run(data: PathBuf) -> ! {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line.ok().as_deref().and_then(parse) {
                Some(cmd) => {
                    if tx.send(cmd).is_err() {
                        return;
                    }
                }
                None => continue,
            }
        }
        let _ = tx.send(Cmd::Eof);
    });
    let mut armed: Option<(u32, u64)> = None;
    let mut agent_gone = false;
    loop {
        if agent_gone && armed.is_none() {
            std::process::exit(0);
        }
        let cmd = match armed {
            Some((_, fire_at)) => {
                let now = monotonic_ns();
                if now >= fire_at {
                    None
                } else {
                    match rx.recv_timeout(Duration::from_nanos(fire_at - now)) {
                        Ok(c) => Some(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => Some(Cmd::Eof),
                    }
                }
            }
            None => Some(rx.recv().unwrap_or(Cmd::Eof)),
        };
        match cmd {
            Some(Cmd::Arm { pid, fire_at }) => armed = Some((pid, fire_at)),
            Some(Cmd::Disarm) => armed = None,
            Some(Cmd::Eof) => agent_gone = true,
            None => {
                if let Some((pid, _)) = armed.take() {
                    let n = kill_instance(&data, Some(pid));
                    eprintln!(
                        "pgquorum fence guard: lease deadline reached without renewal; killed {n} Postgres processes in {}",
                        data.display()
                    );
                }
            }
        }
    }
}

//! What an idle member costs, read from /proc: memory, CPU and bytes written of one process
//! (`sample`), and of a whole member (`member`: the agent, its fence guard and every process of
//! its Postgres, the postmaster's reaped children included), plus the statements Postgres logged
//! (`statements_logged`, with `log_statement=all`), which counts the agent's SQL. Used by `pgquorum-bench idle` and the footprint regression test.
//!
//! Owns reading and subtracting samples; must not start or stop anything.

use std::path::Path;

use anyhow::{Context, Result};

/// One process at one moment.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// VmRSS in kB.
    pub rss_kb: u64,
    /// RssAnon in kB (heap, stacks: what the process itself allocated).
    pub anon_kb: u64,
    /// VmHWM (peak RSS) in kB.
    pub hwm_kb: u64,
    /// Threads.
    pub threads: u64,
    /// utime + stime in clock ticks.
    pub ticks: u64,
    /// cutime + cstime: reaped children's CPU, in clock ticks.
    pub child_ticks: u64,
    /// Bytes this process caused to be written to storage (/proc/<pid>/io).
    pub write_bytes: u64,
    /// Proportional set size in kB: each shared page divided among the processes mapping it
    /// (/proc/<pid>/smaps_rollup).
    pub pss_kb: u64,
    /// Private pages in kB (clean and dirty): what this process alone holds.
    pub private_kb: u64,
    /// Context switches of all its threads so far ([`context_switches`]).
    pub switches: u64,
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Reads `/proc/<pid>/{status,stat,io,smaps_rollup}`.
pub fn sample(pid: u32) -> Result<Sample> {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}")).with_context(|| format!("/proc/{pid}/{f}"))
    };
    let (status, stat, io, rollup) = (read("status")?, read("stat")?, read("io")?, read("smaps_rollup")?);
    let get = |text: &str, key: &str| field(text, key).with_context(|| format!("{key} of pid {pid}"));
    // Fields after the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let rest: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    let tick = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok()).context("stat times");
    Ok(Sample {
        rss_kb: get(&status, "VmRSS:")?,
        anon_kb: get(&status, "RssAnon:")?,
        hwm_kb: get(&status, "VmHWM:")?,
        threads: get(&status, "Threads:")?,
        ticks: tick(14)? + tick(15)?,
        child_ticks: tick(16)? + tick(17)?,
        write_bytes: get(&io, "write_bytes:")?,
        pss_kb: get(&rollup, "Pss:")?,
        private_kb: get(&rollup, "Private_Clean:")? + get(&rollup, "Private_Dirty:")?,
        switches: context_switches(pid)?,
    })
}

/// How many times the threads of process `pid` went to sleep of their own accord (voluntary
/// context switches): each ends in a wake-up, the thing an idle agent must do rarely (issue 10).
/// Preemptions are left out (they grow with the machine's load, not with the agent's design);
/// threads that exited are not counted.
pub fn context_switches(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else { continue };
        total += field(&status, "voluntary_ctxt_switches:").unwrap_or(0);
    }
    Ok(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it does not answer).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// One member at one moment: its agent, fence guard, and Postgres (every process whose
/// working directory is the data directory).
#[derive(Clone, Debug)]
pub struct Member {
    /// The agent process.
    pub agent: Sample,
    /// The fence guard (None: not found).
    pub guard: Option<Sample>,
    /// Postgres processes by PID.
    pub postgres: Vec<(u32, Sample)>,
    /// The PIDs of those that are client sessions ([`is_client_session`]).
    pub sessions: Vec<u32>,
}

/// Whether a Postgres process title (`/proc/PID/cmdline`) is a client session: a backend
/// serving a connection on the local socket or loopback, not a WAL sender. On an idle member
/// these are the HA agent's own SQL sessions: the Postgres work the agent causes, as opposed to
/// the server's own processes (checkpointer, WAL writer and receiver, ...), which run whoever
/// manages it.
pub fn is_client_session(title: &str) -> bool {
    !title.contains("walsender") && ["[local]", "127.0.0.1(", "::1("].iter().any(|h| title.contains(h))
}

/// Samples the member whose agent is `agent_pid` and whose data directory is `pgdata`.
pub fn member(agent_pid: u32, pgdata: &Path) -> Result<Member> {
    let mut guard = None;
    let (mut postgres, mut sessions) = (Vec::new(), Vec::new());
    for pid in crate::procs::pids_of(pgdata) {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let title = String::from_utf8_lossy(&cmd);
        let Ok(s) = sample(pid) else { continue };
        if title.contains("fence-guard") {
            guard = Some(s);
        } else {
            if is_client_session(&title) {
                sessions.push(pid);
            }
            postgres.push((pid, s));
        }
    }
    Ok(Member { agent: sample(agent_pid)?, guard, postgres, sessions })
}

/// CPU clock ticks a member's Postgres spent between two samples: each process still running
/// at the end, less what it had at the start, plus what reaped children added to the
/// postmaster's (every process's `cutime`).
pub fn postgres_ticks(before: &Member, after: &Member) -> u64 {
    ticks_of(before, after, |_| true)
}

/// CPU clock ticks of the client sessions ([`is_client_session`]) alive at the end, less what
/// they had at the start. Sessions that ended in the window are only in [`postgres_ticks`].
pub fn session_ticks(before: &Member, after: &Member) -> u64 {
    ticks_of(before, after, |pid| after.sessions.contains(&pid))
}

fn ticks_of(before: &Member, after: &Member, which: impl Fn(u32) -> bool) -> u64 {
    after
        .postgres
        .iter()
        .filter(|(pid, _)| which(*pid))
        .map(|(pid, a)| {
            let b =
                before.postgres.iter().find(|(p, _)| p == pid).map(|(_, s)| s.clone()).unwrap_or_default();
            (a.ticks + a.child_ticks).saturating_sub(b.ticks + b.child_ticks)
        })
        .sum()
}

/// Total RSS of a member's Postgres processes in kB (shared buffers count once per process
/// that touched them, so this overstates what Postgres really holds).
pub fn postgres_rss_kb(m: &Member) -> u64 {
    m.postgres.iter().map(|(_, s)| s.rss_kb).sum()
}

/// Bytes a member's Postgres processes caused to be written between two samples.
pub fn postgres_write_bytes(before: &Member, after: &Member) -> u64 {
    after
        .postgres
        .iter()
        .map(|(pid, a)| {
            let b = before.postgres.iter().find(|(p, _)| p == pid).map_or(0, |(_, s)| s.write_bytes);
            a.write_bytes.saturating_sub(b)
        })
        .sum()
}

/// Statements Postgres logged so far in `log` (its output file; run it with
/// `log_statement=all`): one `statement:` or `execute` line per statement, whatever the protocol.
/// (pg_stat_database's transaction counts cannot serve: Postgres 15 flushes them only with
/// other pending statistics, so the agent's catalog-only queries never show up there.)
pub fn statements_logged(log: &Path) -> Result<usize> {
    let text = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.contains("LOG:  statement: ") || l.contains("LOG:  execute "))
        .count())
}

/// Anonymous memory (kB) inside the mappings of process `pid`'s own executable, and how many
/// mappings of it there are ([`exe_anon_in`] of its smaps): pages of the file the process wrote
/// to. A position-independent agent's dynamic loader writes every relocated pointer of
/// `.data.rel.ro` (about 1 MiB in a release build); linked without PIE only the GOT entries of
/// shared-library symbols and the data the program itself changes remain.
pub fn exe_anon_kb(pid: u32) -> Result<(u64, usize)> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).with_context(|| format!("/proc/{pid}/exe"))?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("/proc/{pid}/smaps"))?;
    Ok(exe_anon_in(&smaps, &exe.to_string_lossy()))
}

/// Sums the `Anonymous:` fields of the mappings of file `path` in a `/proc/<pid>/smaps` text, and
/// counts those mappings. A file replaced since it was mapped reads `<path> (deleted)` in both
/// places; the suffix is ignored on either side.
pub fn exe_anon_in(smaps: &str, path: &str) -> (u64, usize) {
    let unlinked = |p: &str| p.strip_suffix(" (deleted)").unwrap_or(p).to_string();
    let path = unlinked(path);
    let (mut ours, mut total, mut mappings) = (false, 0, 0);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, device, inode, then the path (which may
            // hold spaces), if any.
            let name = f.skip(4).collect::<Vec<_>>().join(" ");
            ours = unlinked(&name) == path;
            mappings += usize::from(ours);
        } else if ours && first == "Anonymous:" {
            total += f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    (total, mappings)
}

/// glibc's malloc arenas beyond the main one in process `pid` ([`count_arenas`] of its maps).
pub fn malloc_arenas(pid: u32) -> Result<usize> {
    let maps =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).with_context(|| format!("/proc/{pid}/maps"))?;
    Ok(count_arenas(&maps))
}

/// glibc reserves each extra malloc arena as an anonymous 64 MiB region on a 64 MiB boundary
/// (HEAP_MAX_SIZE on 64-bit), mapped read-write as far as it is used and inaccessible beyond:
/// counts such regions in a `/proc/<pid>/maps` text. Thread stacks and other anonymous mappings
/// neither start on such a boundary nor span exactly that.
pub fn count_arenas(maps: &str) -> usize {
    const HEAP: u64 = 64 << 20;
    // Anonymous mappings as (start, end), in address order.
    let anon: Vec<(u64, u64)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, _perms, _off, _dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            if inode != "0" || f.next().is_some() {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
        })
        .collect();
    (0..anon.len())
        .filter(|&i| {
            let start = anon[i].0;
            if !start.is_multiple_of(HEAP) {
                return false;
            }
            let mut end = start;
            for &(a, b) in &anon[i..] {
                if a != end || end >= start + HEAP {
                    break;
                }
                end = b;
            }
            end == start + HEAP
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::{count_arenas, exe_anon_in, is_client_session};

    #[test]
    fn anonymous_pages_of_the_executable_are_summed_over_its_mappings_only() {
        let smaps = "\
00400000-00800000 r--p 00000000 fe:00 42 /x/pgquorum-agent
Rss:                2148 kB
Anonymous:            44 kB
00800000-00900000 rw-p 00400000 fe:00 42 /x/pgquorum-agent
Anonymous:            32 kB
00900000-00a00000 rw-p 00000000 00:00 0 [heap]
Anonymous:           932 kB
7f0000000000-7f0000100000 r--p 00000000 fe:00 7 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             8 kB
";
        assert_eq!(exe_anon_in(smaps, "/x/pgquorum-agent"), (76, 2));
        assert_eq!(exe_anon_in(smaps, "/x/other"), (0, 0));
        // Replaced while running, and a path with a space.
        let replaced = smaps.replace("/x/pgquorum-agent", "/x y/pgquorum-agent (deleted)");
        assert_eq!(exe_anon_in(&replaced, "/x y/pgquorum-agent (deleted)"), (76, 2));
    }

    #[test]
    fn malloc_arenas_are_told_from_stacks_and_other_mappings() {
        let maps = "\
55cbf28bc000-55cbf28bd000 rw-p 00000000 00:00 0 \n\
7fb7a4000000-7fb7a4021000 rw-p 00000000 00:00 0 \n\
7fb7a4021000-7fb7a8000000 ---p 00000000 00:00 0 \n\
7fb7a8000000-7fb7ac000000 rw-p 00000000 00:00 0 \n\
7fb7b0000000-7fb7b0021000 rw-p 00000000 00:00 0 \n\
7fb7b0021000-7fb7b2000000 ---p 00000000 00:00 0 \n\
7fb7b81c8000-7fb7b81c9000 ---p 00000000 00:00 0 \n\
7fb7b81c9000-7fb7b83c9000 rw-p 00000000 00:00 0 \n\
7fb7b8e00000-7fb7b8e21000 r--p 00000000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n";
        // Two whole 64 MiB regions (the second fully used), one cut short, a stack, the heap.
        assert_eq!(count_arenas(maps), 2);
        assert_eq!(count_arenas(""), 0);
    }

    #[test]
    fn client_sessions_are_told_from_the_servers_own_processes() {
        for title in [
            "postgres: postgres postgres [local] idle",
            "postgres: m1: postgres postgres [local] SELECT",
            "postgres: postgres postgres 127.0.0.1(51234) idle",
        ] {
            assert!(is_client_session(title), "{title}");
        }
        for title in [
            "/usr/lib/postgresql/15/bin/postgres -D /tmp/x",
            "postgres: checkpointer ",
            "postgres: walreceiver streaming 0/3000148",
            "postgres: walsender replicator [local] streaming 0/3000148",
            "postgres: walsender replicator 127.0.0.1(40000) streaming 0/3000148",
        ] {
            assert!(!is_client_session(title), "{title}");
        }
    }
}

//! End-to-end guard on what an idle member costs (issue 10): an idle member's agent reads its
//! Postgres over SQL about once per `ha.status_interval` (2 s), not on every 100 ms tick, wakes up a
//! bounded number of times a second, one long poll per pair of members carries their reports
//! both ways, the primary's lease renewals ride on its replies to the Raft leader's heartbeats,
//! and the agent and its fence guard stay small. The bounds are several times the
//! expected values and far below what the agent cost before (10 status queries a second,
//! 36 MB), so neither noise on a loaded machine nor a debug build trips them, but a return to
//! per-tick SQL or to a large table built at start-up does. The members archive WAL first, and
//! then an agent still has a single malloc arena: before `pgquorum-malloc` each blocking thread
//! that compressed or checksummed a segment got one, which kept its buffers resident (3-4 MiB
//! per member in release builds). The agent executable is linked without PIE, so the loader
//! does not turn its read-only data into private copies at start-up (about 1 MiB).
//! Also: the harness's own footprint, the shared memory a test's Postgres leaves behind.

use std::time::{Duration, Instant};

use pgquorum_tests::{Cluster, ClusterOptions, procs};
use pgquorum_tests::{footprint, wal};

const T: Duration = Duration::from_secs(90);
/// The measuring window.
const WINDOW: Duration = Duration::from_secs(30);
/// Most statements an idle member's Postgres may run per second of the window: the agent's
/// status read every 2 s (`ha.status_interval`; 15 in 30 s in a debug build), with room for
/// a few forced reads; 1 a second before the fourteenth session, 10 before issue 10.
const MAX_PER_SECOND: f64 = 0.8;
/// Largest heap and stacks (RssAnon, which a debug build's large binary does not inflate) of an
/// idle agent and of its fence guard, in MiB. Before the base2histogram patch the agent's alone
/// was about 30 MiB.
const MAX_AGENT_MIB: u64 = 16;
const MAX_GUARD_MIB: u64 = 4;
/// Most anonymous memory inside the agent executable's own mappings, in kB: linked without PIE
/// (agent/build.rs) only its GOT and the data it changes: 76 kB in a release build, 116 kB in a
/// debug one; a position-independent agent's loader dirties all of `.data.rel.ro`: about 1 MiB
/// in a release build, 2.6 MiB in a debug one.
const MAX_EXE_ANON_KB: u64 = 256;
/// WAL segments ended (and archived by every member) before the idle window.
const SEGMENTS: usize = 10;
/// Largest resident size of the fence guard, in MiB, shared pages included: the small
/// `pgquorum-fence-guard` executable holds about 2.3 MiB even in a debug build; the agent
/// binary run as the guard (what it replaced) held 6-7 MiB.
const MAX_GUARD_RSS_MIB: u64 = 3;
/// Most wake-ups (voluntary context switches of all its threads) per second of an idle agent:
/// 14-27 a second in release builds since the eighth session (28-40 before it, debug and release
/// alike, with openraft ticking only when something is due and one runtime thread); 73-101 with
/// two runtime threads, 81-111 with openraft's fixed tick, 190-284 before issue 10
/// (BENCHMARKS.md, issue 10).
const MAX_WAKES_PER_SECOND: f64 = 50.0;
/// Most long-poll requests for peers' reports, all members together, per second: about 1 per
/// pair of members (a peer answers every half staleness bound, 1 s), 3 for 3 members; 6 with
/// the 1 s staleness bound of before, 12 when every member polls every other (before reports
/// went with the requests).
const MAX_POLLS_PER_SECOND: f64 = 4.5;
/// Fewest lease renewals an idle primary carries per second on its replies to the Raft leader's
/// AppendEntries (`raft::lease_mail`): it renews every ttl/3 (2 a second at the default 1.5 s),
/// all of them carried while heartbeats come on time; a quarter at most go as calls of their
/// own (0 before the seventeenth session, when every renewal was a call).
const MIN_CARRIED_PER_SECOND: f64 = 1.0;

/// The cluster's epoch (it changes with every failover).
fn epoch(c: &mut Cluster) -> u64 {
    c.status().ok().and_then(|st| st["epoch"].as_u64()).unwrap_or(0)
}

#[test]
fn idle_members_query_postgres_every_two_seconds_and_stay_small() {
    let archive = pgquorum_tests::secrets::agents_tempdir("pgq-footprint-archive-");
    let opts = ClusterOptions {
        settings: vec![
            "postgres.parameters.log_statement=all".into(),
            "archive.enabled=true".into(),
            format!("archive.dir={}", archive.path().display()),
        ],
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start(opts);
    let p = c.wait_for_primary(T);
    let rest: Vec<String> = c.agents.iter().map(|a| a.name.clone()).filter(|n| *n != p).collect();
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    // Let roles, slots and the synchronous set settle.
    std::thread::sleep(Duration::from_secs(5));
    let heap = |c: &Cluster| -> Vec<u64> {
        c.agents
            .iter()
            .map(|a| footprint::sample(a.pid().expect("agent running")).expect("/proc").anon_kb)
            .collect()
    };
    let heap_before = heap(&c);
    wal::write_and_switch(&c, &p, SEGMENTS);
    let names: Vec<&str> = c.agents.iter().map(|a| a.name.as_str()).collect();
    wal::wait_archived(&c, &names, T);
    let logs: Vec<_> = c.agents.iter().map(|a| a.dir.join("postgres.log")).collect();
    let count = |i: usize| footprint::statements_logged(&logs[i]).expect("Postgres log");
    // A window only counts if the cluster stayed idle: on an overloaded machine a lease can run
    // out, and a failover rightly makes every member read Postgres on every tick.
    // Per member: long polls sent, lease renewals carried on Raft replies, renewal calls.
    let polls = |c: &Cluster| -> Vec<[f64; 3]> {
        c.agents
            .iter()
            .map(|a| {
                let body = a.http("GET", "/metrics").expect("metrics").body;
                let samples = pgquorum_tests::prom::parse(&body).expect("metrics parse");
                let get = |name| pgquorum_tests::prom::value(&samples, name, &[]).expect(name);
                [
                    get("pgquorum_peer_report_polls_total"),
                    get("pgquorum_lease_renewals_carried_total"),
                    get("pgquorum_lease_renewal_calls_total"),
                ]
            })
            .collect()
    };
    let mut idle_window = None;
    for _ in 0..3 {
        let e0 = epoch(&mut c);
        let wakes = || -> Vec<u64> {
            c.agents
                .iter()
                .map(|a| footprint::context_switches(a.pid().expect("agent running")).expect("/proc"))
                .collect()
        };
        let (before, wakes_before, polls_before) =
            ((0..logs.len()).map(count).collect::<Vec<_>>(), wakes(), polls(&c));
        let t = Instant::now();
        std::thread::sleep(WINDOW);
        let (after, wakes_after, polls_after) =
            ((0..logs.len()).map(count).collect::<Vec<_>>(), wakes(), polls(&c));
        if epoch(&mut c) == e0 && e0 > 0 {
            let woke: Vec<u64> =
                wakes_after.iter().zip(&wakes_before).map(|(a, b)| a.saturating_sub(*b)).collect();
            let polled: Vec<[f64; 3]> = polls_after
                .iter()
                .zip(&polls_before)
                .map(|(a, b)| [a[0] - b[0], a[1] - b[1], a[2] - b[2]])
                .collect();
            idle_window = Some((before, after, woke, polled, t.elapsed().as_secs_f64()));
            break;
        }
        c.wait_for_primary(T);
    }
    let (before, after, woke, counted, secs) =
        idle_window.expect("the cluster failed over in each of 3 windows of 30 s");
    let polled: Vec<f64> = counted.iter().map(|c| c[0]).collect();
    let primary = c.agents.iter().position(|a| a.name == p).expect("the primary is a member");
    let [_, carried, calls] = counted[primary];
    eprintln!(
        "{p} (primary) renewed its lease {carried} times on Raft replies and {calls} times by call in {secs:.1} s"
    );
    assert!(
        carried >= MIN_CARRIED_PER_SECOND * secs && calls * 3.0 <= carried,
        "the idle primary renewed {carried} times on Raft replies and {calls} times by call in {secs:.1} s (at \
         least {MIN_CARRIED_PER_SECOND}/s carried, at most a quarter by call expected): does its renewal no longer \
         ride on the reply to the Raft leader's heartbeat (raft::lease_mail)? (A primary that leads Raft \
         itself renews with no message at all; leadership is handed off the primary's member.)"
    );
    eprintln!("long polls sent per member in {secs:.1} s: {polled:?}");
    assert!(
        polled.iter().sum::<f64>() <= MAX_POLLS_PER_SECOND * secs,
        "the members sent {polled:?} long polls in {secs:.1} s (at most {MAX_POLLS_PER_SECOND}/s together): \
         does every member poll every other again (reports no longer sent with the requests)?"
    );
    assert!(
        polled.iter().any(|p| *p <= 2.0),
        "every member polled its peers ({polled:?} in {secs:.1} s): the member with the highest node id \
         should only answer"
    );
    for (i, a) in c.agents.iter().enumerate() {
        let ran = after[i].saturating_sub(before[i]) as f64;
        let m = footprint::member(a.pid().expect("agent running"), &a.pgdata()).expect("sample");
        let guard = m.guard.expect("fence guard running");
        let wakes = woke[i] as f64 / secs;
        eprintln!(
            "{}: {ran} statements in {secs:.1} s; agent {wakes:.0} wake-ups/s, RSS {} kB (anon {} kB); guard RSS {} kB \
             (anon {} kB)",
            a.name, m.agent.rss_kb, m.agent.anon_kb, guard.rss_kb, guard.anon_kb
        );
        assert!(
            wakes <= MAX_WAKES_PER_SECOND,
            "{}: the idle agent woke {wakes:.0} times a second (at most {MAX_WAKES_PER_SECOND} expected): is \
             something polling or ticking fast again (openraft's tick, the HA loop, peer polls)?",
            a.name
        );
        assert!(
            ran <= MAX_PER_SECOND * secs,
            "{}: Postgres ran {ran} statements in {secs:.1} s while idle (at most {MAX_PER_SECOND}/s \
             expected): is the agent querying its status on every tick again?",
            a.name
        );
        assert!(
            m.agent.anon_kb <= MAX_AGENT_MIB * 1024,
            "{}: agent heap and stacks (RssAnon) {} kB exceed {MAX_AGENT_MIB} MiB",
            a.name,
            m.agent.anon_kb
        );
        let (exe_anon, mappings) =
            footprint::exe_anon_kb(a.pid().expect("agent running")).expect("/proc smaps");
        eprintln!("{}: {exe_anon} kB of the agent executable's own pages written", a.name);
        assert!(mappings > 0, "{}: no mapping of the agent's own executable found in its smaps", a.name);
        assert!(
            exe_anon <= MAX_EXE_ANON_KB,
            "{}: {exe_anon} kB of the agent executable's pages are private copies (at most {MAX_EXE_ANON_KB} kB \
             expected): was it linked as a position-independent executable again (agent/build.rs), so the \
             loader relocated .data.rel.ro at start-up?",
            a.name
        );
        let grown = m.agent.anon_kb.saturating_sub(heap_before[i]);
        let arenas = footprint::malloc_arenas(a.pid().expect("agent running")).expect("/proc maps");
        eprintln!(
            "{}: heap and stacks grew {grown} kB from before {SEGMENTS} segments were archived; {arenas} extra malloc arenas",
            a.name
        );
        assert_eq!(
            arenas, 0,
            "{}: the agent has {arenas} malloc arenas besides the main one after archiving (each keeps its \
             compression buffers resident, 3-4 MiB a member): is pgquorum-malloc no longer applied first thing in main?",
            a.name
        );
        assert!(
            guard.rss_kb <= MAX_GUARD_RSS_MIB * 1024,
            "{}: fence guard resident {} kB exceeds {MAX_GUARD_RSS_MIB} MiB: is the agent binary running as the \
             guard (pgquorum-fence-guard missing next to it)?",
            a.name,
            guard.rss_kb
        );
        assert!(
            guard.anon_kb <= MAX_GUARD_MIB * 1024,
            "{}: fence guard heap and stacks (RssAnon) {} kB exceed {MAX_GUARD_MIB} MiB",
            a.name,
            guard.anon_kb
        );
    }
    c.check_logs(&[]);
}

/// Whether the kernel still lists System V segment `id`.
fn segment_exists(id: &str) -> bool {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").expect("/proc/sysvipc/shm");
    table.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some(id))
}

/// The harness ends a test's Postgres without leaking its shared memory (docs/decisions.md,
/// "Tests stop Postgres so that its shared memory goes with it"): after 4096 leaked segments no
/// Postgres on the machine can start. Members stopped by dropping their agents leave neither
/// their System V segments nor the /dev/shm files their instances mapped, and a member whose
/// agent and postmaster were killed with kill -9 first (a crash nobody recovered from) does not
/// leave its segment. (Its /dev/shm files go only if one of its backends still mapped them when
/// the harness stopped it, so they are not checked.)
#[test]
fn dropped_members_leave_no_shared_memory_behind() {
    let mut c = Cluster::start(ClusterOptions::default());
    let primary = c.wait_for_primary(T);
    let replicas: Vec<String> = c.agents.iter().map(|a| a.name.clone()).filter(|n| *n != primary).collect();
    c.wait_for_streaming(&replicas.iter().map(String::as_str).collect::<Vec<_>>(), T);
    let killed = replicas[0].clone();
    let mut segments = Vec::new();
    let mut files = Vec::new();
    for a in &c.agents {
        let (_, id) = procs::postmaster_segment(&a.pgdata()).expect("postmaster.pid names its segment");
        segments.push((a.name.clone(), id));
        let mapped = procs::mapped_postgres_shm(&[a.postmaster_pid().expect("postmaster running")]);
        assert!(!mapped.is_empty(), "{}'s postmaster maps its dynamic shared memory control segment", a.name);
        if a.name != killed {
            files.extend(mapped);
        }
    }
    assert!(segments.iter().all(|(_, id)| segment_exists(id)), "{segments:?}");
    c.agent_mut(&killed).kill9_with_postgres();
    drop(c);
    for (name, id) in &segments {
        assert!(!segment_exists(id), "{name}'s System V segment {id} is still there after the test ended");
    }
    let left: Vec<&String> = files.iter().filter(|f| std::path::Path::new(f).exists()).collect();
    assert!(left.is_empty(), "/dev/shm files of stopped instances left behind: {left:?}");
}

//! Idle members with Postgres: per member, the agent's, the fence guard's and Postgres's memory
//! and CPU, the bytes each wrote to storage, and (with --log-statements) the statements Postgres
//! ran (the agent's SQL statements), over a window without client requests; or, with --writer,
//! the same under pgbench, with each agent's RSS sampled through the window. Samples /proc
//! through `pgquorum_tests::footprint`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgquorum_tests::footprint::{self, Member};
use pgquorum_tests::{Cluster, ClusterOptions};

use crate::idle::mib;

/// Deadline for the cluster to come up.
const T: Duration = Duration::from_secs(180);

fn sample_all(c: &Cluster) -> Result<Vec<(Member, u64)>> {
    c.agents
        .iter()
        .map(|a| {
            let pid = a.pid().with_context(|| format!("{} not running", a.name))?;
            let m = footprint::member(pid, &a.pgdata())?;
            let n = footprint::statements_logged(&a.dir.join("postgres.log"))? as u64;
            Ok((m, n))
        })
        .collect()
}

/// Starts 3 members, waits until they are steady (after `switch_wal` segments archived, when
/// not 0) and then `settle` seconds more, and samples every member at the start and end of a
/// `seconds` window, through which `writer` pgbench clients write (when not 0). With
/// `log_statements` Postgres logs every statement (which costs it CPU) so the SQL column counts
/// them; without, it reads 0.
pub(crate) fn run(
    seconds: u64,
    settle: u64,
    log_statements: bool,
    switch_wal: u64,
    writer: u32,
) -> Result<()> {
    let mut opts = ClusterOptions::default();
    if log_statements {
        opts.settings.push("postgres.parameters.log_statement=all".into());
    }
    // Kept until the end of the run: the agents archive into it.
    let archive =
        (switch_wal > 0 || writer > 0).then(|| pgquorum_tests::secrets::agents_tempdir("pgq-idle-archive-"));
    if let Some(dir) = &archive {
        opts.settings.push("archive.enabled=true".into());
        opts.settings.push(format!("archive.dir={}", dir.path().display()));
    }
    let mut c = Cluster::start(opts);
    let primary = c.wait_for_primary(T);
    let rest: Vec<String> = c.agents.iter().map(|a| a.name.clone()).filter(|n| *n != primary).collect();
    c.wait_for_streaming(&[&rest[0], &rest[1]], T);
    if switch_wal > 0 {
        pgquorum_tests::wal::write_and_switch(&c, &primary, switch_wal as usize);
        let names: Vec<&str> = c.agents.iter().map(|a| a.name.as_str()).collect();
        pgquorum_tests::wal::wait_archived(&c, &names, T);
        println!("{switch_wal} WAL segments ended on {primary} and archived by every member");
    }
    let hosts = c.postgres_addresses();
    if writer > 0 {
        pgquorum_tests::pgbench::init(&hosts, 2);
    }
    std::thread::sleep(Duration::from_secs(settle));
    let load = (writer > 0)
        .then(|| pgquorum_tests::pgbench::Load::start(hosts, writer, Duration::from_secs(seconds)));
    let before = sample_all(&c)?;
    let t = Instant::now();
    // Under a writer, each agent's RSS every 200 ms through the window: (largest, sum, count).
    let mut rss: Vec<(u64, u64, u64)> = vec![(0, 0, 0); c.agents.len()];
    while t.elapsed() < Duration::from_secs(seconds) {
        let left = Duration::from_secs(seconds).saturating_sub(t.elapsed());
        std::thread::sleep(if writer > 0 { left.min(Duration::from_millis(200)) } else { left });
        for (a, r) in c.agents.iter().zip(rss.iter_mut()).filter(|_| writer > 0) {
            let Ok(s) = footprint::sample(a.pid().context("agent not running")?) else { continue };
            *r = (r.0.max(s.rss_kb), r.1 + s.rss_kb, r.2 + 1);
        }
    }
    let after = sample_all(&c)?;
    let window = t.elapsed().as_secs_f64();
    if let Some(load) = load {
        println!("under a writer: {writer} pgbench clients, {} transactions in the window", load.stop());
        let peaks: Vec<String> = c
            .agents
            .iter()
            .zip(&before)
            .map(|(a, (m, _))| format!("{} {:.1}", a.name, mib(m.agent.hwm_kb)))
            .collect();
        println!("agent peak RSS (agHWM) when the window started: {} MiB", peaks.join(", "));
        let during: Vec<String> = c
            .agents
            .iter()
            .zip(&rss)
            .map(|(a, r)| format!("{} {:.1} / {:.1}", a.name, mib(r.0), mib(r.1 / r.2.max(1))))
            .collect();
        println!("agent RSS through the window, every 200 ms, largest / mean: {} MiB", during.join(", "));
        println!("pgSes% and caused% of the primary include pgbench's sessions");
    }
    let tck = footprint::clk_tck() as f64;
    let pct = |ticks: u64| 100.0 * ticks as f64 / tck / window;
    println!("primary {primary}; window {window:.1} s; CLK_TCK {tck}; memory in MiB; CPU in % of one core");
    println!(
        "{:<4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9}",
        "mbr",
        "agRSS",
        "agAnon",
        "agHWM",
        "agCPU%",
        "agWake/s",
        "grdRSS",
        "grdPSS",
        "grdPriv",
        "grdCPU%",
        "pgCPU%",
        "pgSes%",
        "total%",
        "caused%",
        "SQL/min",
        "agWrite",
        "pgWrite",
        "threads"
    );
    for (a, ((b, tx0), (e, tx1))) in c.agents.iter().zip(before.iter().zip(&after)) {
        let agent = e.agent.ticks.saturating_sub(b.agent.ticks);
        let guard = match (&b.guard, &e.guard) {
            (Some(gb), Some(ge)) => ge.ticks.saturating_sub(gb.ticks),
            _ => 0,
        };
        let pg = footprint::postgres_ticks(b, e);
        let sessions = footprint::session_ticks(b, e);
        let sql = tx1.saturating_sub(*tx0) as f64 * 60.0 / window;
        println!(
            "{:<4} {:>7.1} {:>7.1} {:>7.1} {:>7.2} {:>7.0} {:>7.1} {:>7.1} {:>7.1} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.0} {:>9} {:>9} {:>9}",
            a.name,
            mib(e.agent.rss_kb),
            mib(e.agent.anon_kb),
            mib(e.agent.hwm_kb),
            pct(agent),
            e.agent.switches.saturating_sub(b.agent.switches) as f64 / window,
            e.guard.as_ref().map_or(0.0, |g| mib(g.rss_kb)),
            e.guard.as_ref().map_or(0.0, |g| mib(g.pss_kb)),
            e.guard.as_ref().map_or(0.0, |g| mib(g.private_kb)),
            pct(guard),
            pct(pg),
            pct(sessions),
            pct(agent + guard + pg),
            pct(agent + guard + sessions),
            sql,
            e.agent.write_bytes.saturating_sub(b.agent.write_bytes),
            footprint::postgres_write_bytes(b, e),
            e.agent.threads
        );
    }
    println!("ag = agent, grd = fence guard, pg = every process of the member's Postgres (reaped");
    println!("backends included); pgSes = its client sessions alive at the end (the agent's own SQL:");
    println!("footprint::is_client_session); total = ag + grd + pg; caused = ag + grd + pgSes, what the");
    println!(
        "agent costs beyond Postgres's own processes; agWake/s = voluntary context switches of the agent's threads per"
    );
    println!(
        "second (each ends in a wake-up; an idle agent's CPU goes mostly to these); PSS = shared pages divided"
    );
    println!("among the processes mapping them (the guard maps the agent's own binary and libc);");
    println!("Priv = pages the guard alone holds;");
    println!("SQL/min = statements Postgres logged (only with --log-statements);");
    println!("Write = bytes that reached the storage layer (/proc/<pid>/io)");
    Ok(())
}

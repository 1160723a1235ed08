//! Idle members with Postgres: per member, the agent's, the fence guard's and Postgres's memory
//! and CPU, the bytes each wrote to storage, and (with --log-statements) the statements Postgres ran (the agent's SQL
//! statements), over a window without client requests. Samples /proc through
//! `pgquorum_tests::footprint`.

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
/// `seconds` window. With `log_statements` Postgres logs every statement (which costs it CPU)
/// so the SQL column counts them; without, it reads 0.
pub(crate) fn run(seconds: u64, settle: u64, log_statements: bool, switch_wal: u64) -> Result<()> {
    let mut opts = ClusterOptions::default();
    if log_statements {
        opts.settings.push("postgres.parameters.log_statement=all".into());
    }
    // Kept until the end of the run: the agents archive into it.
    let archive = (switch_wal > 0).then(|| pgquorum_tests::secrets::agents_tempdir("pgq-idle-archive-"));
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
    std::thread::sleep(Duration::from_secs(settle));
    let before = sample_all(&c)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = sample_all(&c)?;
    let window = t.elapsed().as_secs_f64();
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

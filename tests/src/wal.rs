//! WAL in end-to-end tests and benchmarks: ending segments on a primary, and the finished
//! segments a member's Postgres still has to archive.

use std::path::Path;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::wait::wait_for;

/// Writes a row and ends the WAL segment, `n` times, on the primary `p`.
pub fn write_and_switch(c: &Cluster, p: &str, n: usize) {
    let pg = c.pg(p);
    pg.query("CREATE TABLE IF NOT EXISTS archived (id serial primary key, at timestamptz default now())")
        .expect("table");
    for _ in 0..n {
        pg.query("INSERT INTO archived DEFAULT VALUES; SELECT pg_switch_wal()").expect("insert and switch");
    }
}

/// WAL files the Postgres in `pgdata` finished and still has to archive.
pub fn ready_files(pgdata: &Path) -> Vec<String> {
    std::fs::read_dir(pgdata.join("pg_wal/archive_status"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until each of `names` archived (or, a standby, confirmed) every WAL file it finished.
pub fn wait_archived(c: &Cluster, names: &[&str], within: Duration) {
    wait_for(&format!("{names:?} to archive every finished WAL file"), within, || {
        let left: Vec<(&str, Vec<String>)> = names
            .iter()
            .map(|n| (*n, ready_files(&c.agent(n).pgdata())))
            .filter(|(_, files)| !files.is_empty())
            .collect();
        if left.is_empty() { Ok(Some(())) } else { Err(format!("still to archive: {left:?}")) }
    });
}

//! Reading the data directory's control file with `pg_controldata`.

use std::path::Path;

use pgquorum_core::ha::observation::{Data, DataDir};
use pgquorum_core::{Lsn, SystemId, Timeline};

/// What the data directory at `data` holds.
pub async fn read(bin: &Path, data: &Path) -> Data {
    if !data.join("global/pg_control").is_file() {
        let empty = std::fs::read_dir(data).map(|mut d| d.next().is_none()).unwrap_or(true);
        return if empty {
            Data::Missing
        } else {
            Data::Unusable(format!(
                "{} is not empty but holds no Postgres data (no global/pg_control); move it aside or empty it",
                data.display()
            ))
        };
    }
    let mut cmd = tokio::process::Command::new(bin.join("pg_controldata"));
    super::tools::clean_env(&mut cmd);
    let out = cmd.arg(data).env("LC_ALL", "C").stdin(std::process::Stdio::null()).output().await;
    match out {
        Ok(o) if o.status.success() => match parse(&String::from_utf8_lossy(&o.stdout)) {
            Ok(d) => Data::Present(d),
            Err(e) => Data::Unusable(format!("pg_controldata {}: {e}", data.display())),
        },
        Ok(o) => Data::Unusable(format!(
            "pg_controldata {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Data::Unusable(format!("cannot run pg_controldata: {e}")),
    }
}

/// Parses `pg_controldata` output (C locale).
pub fn parse(text: &str) -> Result<DataDir, String> {
    let field = |name: &str| -> Result<&str, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(str::trim))
            .ok_or_else(|| format!("no {name:?} in pg_controldata output"))
    };
    let lsn = |name: &str| -> Result<Lsn, String> { field(name)?.parse() };
    let system_identifier = SystemId(
        field("Database system identifier")?.parse().map_err(|e| format!("system identifier: {e}"))?,
    );
    let state = field("Database cluster state")?;
    let timeline =
        Timeline(field("Latest checkpoint's TimeLineID")?.parse().map_err(|e| format!("timeline: {e}"))?);
    let min_recovery = lsn("Minimum recovery ending location")?;
    let min_recovery_tli: u32 = field("Min recovery ending loc's timeline")?
        .parse()
        .map_err(|e| format!("min recovery timeline: {e}"))?;
    Ok(DataDir {
        system_identifier,
        timeline,
        was_primary: !matches!(state, "shut down in recovery" | "in archive recovery"),
        clean_shutdown: matches!(state, "shut down" | "shut down in recovery"),
        checkpoint_lsn: lsn("Latest checkpoint location")?,
        min_recovery: (min_recovery.0 != 0 && min_recovery_tli != 0)
            .then_some((Timeline(min_recovery_tli), min_recovery)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "pg_control version number:            1300
Database system identifier:           7440000000000000001
Database cluster state:               in archive recovery
Latest checkpoint location:           0/3000060
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's TimeLineID:       2
Minimum recovery ending location:     0/3000110
Min recovery ending loc's timeline:   2
";

    #[test]
    fn standby_control_data_parses() {
        let d = parse(SAMPLE).expect("parses");
        assert_eq!(d.system_identifier, SystemId(7440000000000000001));
        assert_eq!((d.timeline, d.was_primary, d.clean_shutdown), (Timeline(2), false, false));
        assert_eq!(d.checkpoint_lsn, "0/3000060".parse().expect("lsn"));
        assert_eq!(d.min_recovery, Some((Timeline(2), "0/3000110".parse().expect("lsn"))));
    }

    #[test]
    fn cleanly_stopped_primary_parses() {
        let text = SAMPLE.replace("in archive recovery", "shut down").replace("0/3000110", "0/0");
        let d = parse(&text).expect("parses");
        assert!(d.was_primary && d.clean_shutdown);
        assert_eq!(d.min_recovery, None);
    }

    #[test]
    fn missing_fields_are_reported() {
        assert!(parse("nothing").expect_err("fails").contains("Database system identifier"));
    }
}

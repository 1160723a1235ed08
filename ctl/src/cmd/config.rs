//! `pgquorumctl config show | set KEY=VALUE...`: the cluster-wide dynamic configuration.

use pgquorum_proto::management::{GetConfigRequest, SetConfigRequest};

use crate::{Failure, Output, client};

/// Subcommands of `config`.
#[derive(clap::Subcommand)]
pub enum Args {
    /// Print the dynamic configuration.
    Show,
    /// Change keys, KEY=VALUE (validated before it is stored; the change is shown).
    Set {
        /// KEY=VALUE pairs, e.g. ttl=2s durability=protection postgres_parameters.work_mem=64MB.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Refuse unless the configuration is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Edit the configuration in $EDITOR (JSON); the change is shown and confirmed before it
    /// is stored, and refused if someone else changed it meanwhile.
    Edit {
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

async fn edit(c: &mut client::Client, yes: bool) -> Result<(), Failure> {
    let r = c.get_config(GetConfigRequest {}).await.map_err(client::failure)?.into_inner();
    let old: serde_json::Value =
        serde_json::from_str(&r.config_json).map_err(|e| Failure::failed(e.to_string()))?;
    let path = std::env::temp_dir().join(format!("pgquorum-config-{}.json", std::process::id()));
    std::fs::write(&path, format!("{}\n", r.config_json))
        .map_err(|e| Failure::failed(format!("writing {}: {e}", path.display())))?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let mut parts = editor.split_whitespace();
    let program = parts.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(parts)
        .arg(&path)
        .status()
        .map_err(|e| Failure::failed(format!("cannot run the editor {editor:?} (set EDITOR): {e}")))?;
    let kept = format!("your edit is kept in {}", path.display());
    if !status.success() {
        return Err(Failure::failed(format!("the editor exited with {status}; nothing changed; {kept}")));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::failed(format!("reading {}: {e}", path.display())))?;
    let new: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Failure::usage(format!("the edited configuration is not valid JSON ({e}); nothing changed; {kept}"))
    })?;
    let changes = pgquorum_core::state::json_diff(&old, &new);
    if changes.is_empty() {
        let _ = std::fs::remove_file(&path);
        println!("no change");
        return Ok(());
    }
    for ch in &changes {
        println!("{ch}");
    }
    if !yes {
        eprint!("store this change? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).map_err(|e| Failure::failed(e.to_string()))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::failed(format!("not stored; {kept}")));
        }
    }
    let req =
        SetConfigRequest { settings: Vec::new(), expected_version: r.version, config_json: new.to_string() };
    let done = c.set_config(req).await.map_err(|s| {
        let mut f = client::failure(s);
        f.message = format!("{}; {kept}", f.message);
        f
    })?;
    let _ = std::fs::remove_file(&path);
    println!("stored as version {}", done.into_inner().version);
    Ok(())
}

/// Runs `config`.
pub async fn run(endpoint: &str, output: Output, args: Args) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    match args {
        Args::Edit { yes } => edit(&mut c, yes).await?,
        Args::Show => {
            let r = c.get_config(GetConfigRequest {}).await.map_err(client::failure)?.into_inner();
            match output {
                Output::Json => {
                    let cfg: serde_json::Value =
                        serde_json::from_str(&r.config_json).map_err(|e| Failure::failed(e.to_string()))?;
                    println!("{}", serde_json::json!({ "version": r.version, "config": cfg }));
                }
                Output::Table => println!("# version {}\n{}", r.version, r.config_json),
            }
        }
        Args::Set { settings, expected_version } => {
            for s in &settings {
                if !s.contains('=') {
                    return Err(Failure::usage(format!("{s:?}: write KEY=VALUE, for example ttl=2s")));
                }
            }
            let req = SetConfigRequest {
                settings,
                expected_version: expected_version.unwrap_or(0),
                config_json: String::new(),
            };
            let r = c.set_config(req).await.map_err(client::failure)?.into_inner();
            match output {
                Output::Json => {
                    println!("{}", serde_json::json!({ "version": r.version, "changes": r.changes }))
                }
                Output::Table => {
                    if r.changes.is_empty() {
                        println!("no change (version {})", r.version);
                    }
                    for ch in &r.changes {
                        println!("{ch}");
                    }
                    if !r.changes.is_empty() {
                        println!("stored as version {}", r.version);
                    }
                }
            }
        }
    }
    Ok(())
}

//! `pgquorum-agent`: parse the command line, load configuration, set up logging, run.
//!
//! Exit codes: 0 clean stop, 1 failure at run time, 64 bad configuration, 65 data directory
//! unusable (foreign, damaged).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgquorum_agent::config::{AgentConfig, EXIT_CONFIG, all_keys};
use pgquorum_agent::daemon::{self, RunError};
use pgquorum_agent::raft::StartError;

/// Exit code for an unusable data directory (BSD `EX_DATAERR`).
const EXIT_DATA: u8 = 65;

#[derive(Parser)]
#[command(
    name = "pgquorum-agent",
    version,
    about = "PostgreSQL high availability agent (one per Postgres instance)"
)]
struct Cli {
    /// Configuration file (YAML or TOML).
    #[arg(short, long, env = "PGQUORUM_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Override a configuration key, KEY=VALUE (repeatable); see `pgquorum-agent keys`.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent (the default).
    Run,
    /// Load and validate the configuration, print every key's value and where it came from.
    CheckConfig,
    /// List every configuration key with its environment variable, default and meaning.
    Keys,
    /// Archive one WAL file through the running agent: Postgres's archive_command
    /// (`pgquorum-agent wal-push --socket SOCKET %p`). Exit 0 only once the file is stored.
    WalPush {
        /// The agent's archive socket.
        #[arg(long)]
        socket: PathBuf,
        /// The WAL file (Postgres's %p).
        path: PathBuf,
    },
    /// Restore one WAL file through the running agent: Postgres's restore_command
    /// (`pgquorum-agent wal-fetch --socket SOCKET %f %p`). Exit 0 restored, 1 not in the
    /// archive or not reachable now (Postgres tries again or streams), 126 damaged (recovery stops).
    WalFetch {
        /// The agent's archive socket.
        #[arg(long)]
        socket: PathBuf,
        /// The WAL file name (Postgres's %f).
        name: String,
        /// Where to put it (Postgres's %p).
        dest: PathBuf,
    },
    /// (Internal) The fence guard the agent starts: kills Postgres at the lease deadline if the
    /// agent does not renew. Reads commands on stdin.
    #[command(hide = true)]
    FenceGuard {
        /// The Postgres data directory it guards.
        #[arg(long)]
        data: PathBuf,
    },
}

fn load(cli: &Cli) -> Result<AgentConfig, ExitCode> {
    match AgentConfig::load(cli.config.as_deref(), std::env::vars(), &cli.set) {
        Ok((cfg, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            Ok(cfg)
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(EXIT_CONFIG as u8))
        }
    }
}

fn init_logging(cfg: &AgentConfig) {
    let mut filter = cfg.log_level.clone();
    if !filter.contains("openraft") {
        // openraft logs every failed heartbeat; the agent logs reachability changes instead.
        filter.push_str(",openraft=error");
    }
    let filter = tracing_subscriber::EnvFilter::new(filter);
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if cfg.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `fence-guard --data DIR`, recognised before the command-line parser runs: the guard is a
/// process of its own for as long as the agent runs, and everything it touches while starting
/// stays in its resident memory (issue 10: the guard within 3 MB).
fn fence_guard_data() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    let (sub, flag, data) = (args.next()?, args.next()?, args.next()?);
    (sub == "fence-guard" && flag == "--data" && args.next().is_none()).then(|| PathBuf::from(data))
}

fn main() -> ExitCode {
    // Before any thread: one malloc arena and fixed thresholds, or the blocking pool's WAL
    // compression leaves megabytes resident per thread (pgquorum-malloc).
    let heap_tuned = pgquorum_malloc::keep_heap_small();
    if let Some(data) = fence_guard_data() {
        pgquorum_agent::fence::guard::run(data);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::FenceGuard { data }) => pgquorum_agent::fence::guard::run(data),
        Some(Cmd::WalPush { socket, path }) => return wal_push(&socket, &path),
        Some(Cmd::WalFetch { socket, name, dest }) => return wal_fetch(&socket, &name, &dest),
        Some(Cmd::Keys) => {
            for k in all_keys() {
                println!("{}\t{}\t{}\t{}", k.key, k.env(), k.default, k.help);
            }
            return ExitCode::SUCCESS;
        }
        Some(Cmd::CheckConfig) => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            println!("configuration is valid");
            for (key, origin) in &cfg.origins {
                println!("{key}  ({origin})");
            }
            return ExitCode::SUCCESS;
        }
        Some(Cmd::Run) | None => {}
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    if !heap_tuned {
        tracing::debug!(
            "malloc settings not applied (not glibc, or glibc refused one): the heap may stay larger"
        );
    }
    // TLS uses ring, explicitly, whatever other crates enable in rustls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One thread for all the agent's tasks (blocking work goes to tokio's blocking pool): an idle
    // agent's CPU is its wake-ups, and two workers woke each other for most events (issue 10).
    let runtime = match pgquorum_agent::timer::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Start(e @ (StartError::Data(_) | StartError::Settings(_)))) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_DATA)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn wal_push(socket: &std::path::Path, path: &std::path::Path) -> ExitCode {
    use pgquorum_agent::archive::socket::{Answer, absolute, request};
    let path = absolute(path);
    let line = format!("push\t{}", path.display());
    match request(socket, &line, std::time::Duration::from_secs(600)) {
        Answer::Ok => ExitCode::SUCCESS,
        Answer::Missing | Answer::Corrupt(_) => {
            eprintln!("pgquorum wal-push {}: unexpected answer", path.display());
            ExitCode::FAILURE
        }
        Answer::Error(m) => {
            eprintln!("pgquorum wal-push {}: {m}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn wal_fetch(socket: &std::path::Path, name: &str, dest: &std::path::Path) -> ExitCode {
    use pgquorum_agent::archive::socket::{Answer, absolute, request};
    let dest = absolute(dest);
    let line = format!("fetch\t{name}\t{}", dest.display());
    match request(socket, &line, std::time::Duration::from_secs(60)) {
        Answer::Ok => ExitCode::SUCCESS,
        Answer::Missing => ExitCode::from(1),
        Answer::Error(m) => {
            eprintln!("pgquorum wal-fetch {name}: {m}");
            ExitCode::from(1)
        }
        // Above 125 Postgres treats the command as failed hard and stops recovery, instead of
        // taking the file as missing and carrying on without it.
        Answer::Corrupt(m) => {
            eprintln!("pgquorum wal-fetch {name}: {m}");
            ExitCode::from(126)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

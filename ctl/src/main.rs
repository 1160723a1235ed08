//! `pgquorumctl`: the operator's tool. One subcommand per file in `cmd/`.
//!
//! Exit codes scripts can rely on (docs/ctl.md): 0 success; 1 the cluster refused or the
//! operation failed (including a missing prerequisite of `local`, a busy port, a cluster that did
//! not become healthy in time); 2 bad usage (unknown flag, bad value, unknown member); 3 no agent
//! could be reached at the endpoint. A refusal for missing or wrong credentials is 1 too (the
//! cluster refused), with a message saying which flag or variable to set.
#![forbid(unsafe_code)]

mod client;
mod cmd;
mod credentials;
mod progress;
mod table;
mod time;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// How to print results.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables for people.
    Table,
    /// A stable JSON document for scripts.
    Json,
}

#[derive(Parser)]
#[command(
    name = "pgquorumctl",
    version,
    about = "Operate a pgquorum PostgreSQL cluster",
    after_help = "Try it on this machine: pgquorumctl local up\n\n\
                  Exit codes: 0 ok, 1 failed, 2 bad usage, 3 no agent reachable (docs/ctl.md)."
)]
pub struct Cli {
    /// Any agent's gRPC endpoint, host:port; calls that need the leader are forwarded.
    #[arg(short, long, env = "PGQUORUM_ENDPOINT", default_value = "127.0.0.1:7000", global = true)]
    endpoint: String,
    /// Output format.
    #[arg(short, long, value_enum, env = "PGQUORUM_OUTPUT", default_value = "table", global = true)]
    output: Output,
    #[command(flatten)]
    credentials: credentials::Args,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the cluster: Raft leader and term, members and their roles.
    Status(cmd::status::Args),
    /// Show or change the cluster-wide dynamic configuration.
    #[command(subcommand)]
    Config(cmd::config::Args),
    /// List, add or remove members.
    #[command(subcommand)]
    Member(cmd::member::Args),
    /// Base backups into the WAL archive's store, and restore points.
    #[command(subcommand)]
    Backup(cmd::backup::Args),
    /// Hand the primary role over to another member (planned; no acknowledged write lost).
    Switchover(cmd::switchover::Args),
    /// Promote a member when there is no healthy primary.
    Failover(cmd::failover::Args),
    /// Maintenance mode on: agents leave Postgres alone, nobody fails over automatically.
    Pause,
    /// Maintenance mode off.
    Resume,
    /// Restart Postgres on members, one at a time (replicas first).
    Restart(cmd::restart::RestartArgs),
    /// Reload Postgres's configuration on members.
    Reload(cmd::restart::ReloadArgs),
    /// Show every grant of the primary role.
    History,
    /// Run a whole cluster on this machine: up, status, down, kill, start.
    #[command(subcommand)]
    Local(cmd::local::Args),
    /// Break the cluster on purpose and check it held: workload, seeded faults, checks, report.
    #[command(subcommand)]
    Chaos(cmd::chaos::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
}

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What to tell the operator.
    pub message: String,
}

impl Failure {
    /// The cluster refused or the operation failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: message.into() }
    }

    /// Bad usage (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: message.into() }
    }
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Completions(a) = cli.command {
        cmd::completions::run(a);
        return ExitCode::SUCCESS;
    }
    match cli.credentials.resolve(std::env::var("PGQUORUM_TOKEN").ok()) {
        Ok(c) => client::set_credentials(c),
        // `local` manages its own clusters with their own tokens and never sends the operator's:
        // a variable left over from a deleted local cluster must not stop it.
        Err(f) if matches!(cli.command, Command::Local(_)) => {
            eprintln!(
                "note: ignoring {}. `pgquorumctl local` uses the token of the cluster it runs (printed by `local \
                 up`); unset PGQUORUM_TOKEN_FILE if it belongs to a cluster that no longer exists",
                token_file_named(&matches, &f.message)
            );
        }
        Err(f) => {
            eprintln!("error: {}", token_file_named(&matches, &f.message));
            return ExitCode::from(f.code);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let is_local = matches!(cli.command, Command::Local(_));
    let res = runtime.block_on(async {
        match cli.command {
            Command::Status(a) => cmd::status::run(&cli.endpoint, cli.output, a).await,
            Command::Config(a) => cmd::config::run(&cli.endpoint, cli.output, a).await,
            Command::Member(a) => cmd::member::run(&cli.endpoint, cli.output, a).await,
            Command::Backup(a) => cmd::backup::run(&cli.endpoint, cli.output, a).await,
            Command::Switchover(a) => cmd::switchover::run(&cli.endpoint, cli.output, a).await,
            Command::Failover(a) => cmd::failover::run(&cli.endpoint, cli.output, a).await,
            Command::Pause => cmd::pause::run(&cli.endpoint, cli.output, true).await,
            Command::Resume => cmd::pause::run(&cli.endpoint, cli.output, false).await,
            Command::Restart(a) => cmd::restart::restart(&cli.endpoint, cli.output, a).await,
            Command::Reload(a) => cmd::restart::reload(&cli.endpoint, cli.output, a).await,
            Command::History => cmd::history::run(&cli.endpoint, cli.output).await,
            Command::Local(a) => cmd::local::run(cli.output, a).await,
            Command::Chaos(a) => cmd::chaos::run(cli.output, a).await,
            Command::Completions(_) => unreachable!("handled before the runtime starts"),
        }
    });
    // An endpoint that is an agent's HTTP port fails deep in gRPC; say which port to use.
    let res = match res {
        Err(f) if !is_local => Err(runtime.block_on(client::explain_http_port(&cli.endpoint, f))),
        other => other,
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// `message` naming the token file the way the user gave it: the variable, not the flag, when
/// it came from `PGQUORUM_TOKEN_FILE`.
fn token_file_named(matches: &clap::ArgMatches, message: &str) -> String {
    match matches.value_source("token_file") {
        Some(clap::parser::ValueSource::EnvVariable) if message.starts_with("--token-file") => {
            message.replacen("--token-file", "PGQUORUM_TOKEN_FILE", 1)
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

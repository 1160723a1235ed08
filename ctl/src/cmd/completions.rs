//! `pgquorumctl completions SHELL`: print a completion script for bash, zsh, fish, elvish or
//! PowerShell, generated from the same clap definition the tool parses with.

use clap::CommandFactory;
use clap_complete::Shell;

/// Arguments of `completions`.
#[derive(clap::Args)]
#[command(after_help = "Install, for example:\n  \
    bash: pgquorumctl completions bash > ~/.local/share/bash-completion/completions/pgquorumctl\n  \
    zsh:  pgquorumctl completions zsh > \"${fpath[1]}/_pgquorumctl\"\n  \
    fish: pgquorumctl completions fish > ~/.config/fish/completions/pgquorumctl.fish")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the script for `args.shell` on stdout.
pub fn run(args: Args) {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "pgquorumctl", &mut std::io::stdout());
}

//! `pgquorum-fence-guard --data DIR`: the fence guard as a small executable of its own (the
//! agent starts it when it lies next to the agent's binary; otherwise the agent runs itself as
//! `pgquorum-agent fence-guard`). Protocol in `pgquorum_fence::guard`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(data), None) if flag == "--data" => pgquorum_fence::guard::run(PathBuf::from(data)),
        _ => {
            eprintln!(
                "usage: pgquorum-fence-guard --data DIR (started by pgquorum-agent; it reads `arm PID AT` and \
                 `disarm` lines on stdin)"
            );
            ExitCode::from(2)
        }
    }
}

//! Waiting for conditions with a deadline instead of sleeping.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`
/// and the last observation.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<Option<T>, String>) -> T {
    let start = Instant::now();
    let mut last = String::from("(no observation)");
    loop {
        match check() {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last observation: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

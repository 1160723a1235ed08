//! A progress indicator on stderr for long commands: a spinner with the current phase and the
//! elapsed time when stderr is a terminal, one plain line per phase change otherwise (logs and
//! CI stay readable).
//!
//! Owns only stderr drawing; must never write to stdout, which carries the command's result.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// A running progress indicator; dropping it clears the spinner line.
pub struct Progress {
    label: String,
    started: Instant,
    phase: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    spinner: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts an indicator for an operation called `label` (e.g. "local up"). Draws a spinner
    /// only when stderr is a terminal.
    pub fn start(label: &str) -> Progress {
        Progress::with_mode(label, std::io::stderr().is_terminal())
    }

    /// Starts an indicator, choosing spinner (`tty`) or plain lines explicitly.
    pub fn with_mode(label: &str, tty: bool) -> Progress {
        let phase = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let spinner = tty.then(|| {
            let (phase, stop, label) = (phase.clone(), stop.clone(), label.to_string());
            std::thread::spawn(move || {
                let mut frame = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let text = phase.lock().map(|p| p.clone()).unwrap_or_default();
                    let line = format!(
                        "{} {label}: {text} ({:.0}s)",
                        FRAMES[frame % FRAMES.len()],
                        started.elapsed().as_secs_f64()
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                    drop(err);
                    frame += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            })
        });
        Progress { label: label.to_string(), started, phase, stop, spinner }
    }

    /// Sets the current phase; in plain mode prints it when it changed.
    pub fn phase(&self, text: &str) {
        let Ok(mut p) = self.phase.lock() else { return };
        if *p == text {
            return;
        }
        *p = text.to_string();
        if self.spinner.is_none() {
            eprintln!("{}: {text} ({:.1}s)", self.label, self.started.elapsed().as_secs_f64());
        }
    }

    /// Prints a line above the spinner (or plainly), for events worth keeping on screen.
    pub fn note(&self, text: &str) {
        let clear = if self.spinner.is_some() { "\r\x1b[2K" } else { "" };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{clear}{}: {text}", self.label);
    }

    /// Time since the indicator started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the spinner and clears its line.
    pub fn finish(mut self) {
        self.stop_spinner();
    }

    fn stop_spinner(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.spinner.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_spinner();
    }
}

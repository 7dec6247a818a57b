//! A one-line progress bar for long runs, on stderr and only on a terminal.

use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

/// A one-line progress bar on stderr, drawn only when stderr is a terminal and at most ten
/// times a second.
pub struct Progress {
    enabled: bool,
    verb: &'static str,
    drawn: bool,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(verb: &'static str) -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            verb,
            drawn: false,
            last: None,
        }
    }

    pub fn message(&mut self, text: &str) {
        if self.enabled {
            eprint!("\r\x1b[K{}: {text}", self.verb);
            self.drawn = true;
        }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        if !self.enabled
            || (done < total
                && self
                    .last
                    .is_some_and(|last| last.elapsed() < Duration::from_millis(100)))
        {
            return;
        }
        self.last = Some(Instant::now());
        const WIDTH: usize = 30;
        let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
        eprint!(
            "\r\x1b[K{}: [{}{}] {done}/{total}",
            self.verb,
            "#".repeat(filled),
            " ".repeat(WIDTH - filled)
        );
        self.drawn = true;
    }

    /// Clears the bar, so that what follows on the terminal starts on a clean line.
    pub fn finish(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            self.drawn = false;
        }
    }
}

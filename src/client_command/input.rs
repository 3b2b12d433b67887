//! Where command lines come from (a terminal, with line editing and
//! history, or plain standard input) and where server frames go.
//!
//! Reading a line blocks, so it happens on a thread of its own, and each
//! line crosses to the session over a channel; the socket reader never
//! waits for the user.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use rustyline::config::Behavior;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use tokio::sync::mpsc;

/// What the input side has to say.
#[derive(Debug)]
pub enum Input {
    /// A line, without its line ending.
    Line(String),
    /// Input ended (end of file, or Ctrl-D on a terminal).
    End,
    /// Ctrl-C at the prompt.
    Interrupted,
}

/// The lines read so far, one at a time.
pub struct Lines {
    lines: mpsc::Receiver<Input>,
    /// Lets the reading thread read the next line. It waits for this after
    /// each line, so the terminal is not left mid-prompt (raw mode) when a
    /// command ends the session.
    next: std::sync::mpsc::Sender<()>,
    #[cfg(unix)]
    _terminal: Option<CookedTerminal>,
}

impl Lines {
    /// Starts reading, from the terminal when standard input is one; and
    /// where server frames should be printed so they do not garble the
    /// line being typed.
    pub fn start() -> (Self, Output) {
        let (line_sender, lines) = mpsc::channel(1);
        let (next, next_wanted) = std::sync::mpsc::channel();
        #[cfg(unix)]
        let terminal = std::io::stdin()
            .is_terminal()
            .then(CookedTerminal::save)
            .flatten();
        let output = match std::io::stdin().is_terminal().then(terminal_editor) {
            Some(Ok(mut editor)) => {
                let output = Output::for_terminal(&mut editor);
                std::thread::spawn(move || read_terminal(editor, line_sender, next_wanted));
                output
            }
            not_a_terminal => {
                if let Some(Err(err)) = not_a_terminal {
                    eprintln!("ringcast client: no line editing ({err}); reading plain lines");
                }
                std::thread::spawn(move || read_plain(line_sender, next_wanted));
                Output::Stdout
            }
        };
        let lines = Self {
            lines,
            next,
            #[cfg(unix)]
            _terminal: terminal,
        };
        (lines, output)
    }

    /// The next thing read; cancel-safe. After a `Line`, call `read_next`
    /// for the one after.
    pub async fn recv(&mut self) -> Input {
        self.lines.recv().await.unwrap_or(Input::End)
    }

    /// Lets the reading thread go on to the next line.
    pub fn read_next(&self) {
        // A reader that has stopped has sent `End` already.
        let _ = self.next.send(());
    }
}

/// The terminal's settings from before line editing. The reading thread
/// cannot be interrupted mid-prompt, so when the session ends there (the
/// server closed, say) the terminal would stay in raw mode, with typing
/// not echoed; dropping this puts the settings back.
#[cfg(unix)]
struct CookedTerminal(nix::sys::termios::Termios);

#[cfg(unix)]
impl CookedTerminal {
    fn save() -> Option<Self> {
        nix::sys::termios::tcgetattr(std::io::stdin())
            .ok()
            .map(Self)
    }
}

#[cfg(unix)]
impl Drop for CookedTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let stdin = std::io::stdin();
        let mid_prompt =
            tcgetattr(&stdin).is_ok_and(|now| !now.local_flags.contains(LocalFlags::ICANON));
        if mid_prompt {
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &self.0);
            // What is printed next starts on a line of its own.
            eprintln!();
        }
    }
}

/// Where server frames are printed.
pub enum Output {
    /// Standard output, one line per frame.
    Stdout,
    /// The terminal, above the prompt, which is redrawn below.
    AbovePrompt(Box<dyn ExternalPrinter + Send>),
}

impl Output {
    /// Above the prompt when both ends are the terminal; otherwise standard
    /// output, which then carries nothing but frames.
    fn for_terminal(editor: &mut DefaultEditor) -> Self {
        if !std::io::stdout().is_terminal() {
            return Self::Stdout;
        }
        match editor.create_external_printer() {
            Ok(printer) => Self::AbovePrompt(Box::new(printer)),
            Err(_) => Self::Stdout,
        }
    }

    /// Prints one line; an error means nobody is reading any more.
    pub fn print(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Self::Stdout => {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{line}")?;
                stdout.flush()
            }
            Self::AbovePrompt(printer) => printer
                .print(format!("{line}\n"))
                .map_err(std::io::Error::other),
        }
    }
}

/// A line editor on the terminal itself (not standard output, which may be
/// piped into another program).
fn terminal_editor() -> rustyline::Result<DefaultEditor> {
    let config = rustyline::Config::builder()
        .behavior(Behavior::PreferTerm)
        .auto_add_history(true)
        .build();
    DefaultEditor::with_config(config)
}

/// `$HOME/.ringcast_history`, when there is a home.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ringcast_history"))
}

fn read_terminal(
    mut editor: DefaultEditor,
    lines: mpsc::Sender<Input>,
    next_wanted: std::sync::mpsc::Receiver<()>,
) {
    let history = history_file();
    if let Some(path) = &history {
        // No history yet, or an unreadable one: start without.
        let _ = editor.load_history(path);
    }
    relay(lines, next_wanted, || {
        let input = match editor.readline("> ") {
            Ok(line) => Input::Line(line),
            Err(ReadlineError::Eof) => Input::End,
            Err(ReadlineError::Interrupted) => Input::Interrupted,
            Err(err) => {
                eprintln!("ringcast client: cannot read the terminal: {err}");
                Input::End
            }
        };
        if let (Input::Line(_), Some(path)) = (&input, &history) {
            // History is a convenience: a file that cannot be written
            // (read-only home, no space) costs nothing else.
            let _ = editor.save_history(path);
        }
        input
    });
}

fn read_plain(lines: mpsc::Sender<Input>, next_wanted: std::sync::mpsc::Receiver<()>) {
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    relay(lines, next_wanted, || loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) => return Input::End,
            Ok(_) => match std::str::from_utf8(&line) {
                Ok(text) => return Input::Line(text.trim_end_matches(['\n', '\r']).to_owned()),
                Err(_) => eprintln!("ringcast client: skipped a line that is not UTF-8"),
            },
            Err(err) => {
                eprintln!("ringcast client: cannot read standard input: {err}");
                return Input::End;
            }
        }
    });
}

/// Passes on what `read` returns, a line at a time, until input ends or
/// the session stops listening.
fn relay(
    lines: mpsc::Sender<Input>,
    next_wanted: std::sync::mpsc::Receiver<()>,
    mut read: impl FnMut() -> Input,
) {
    loop {
        let input = read();
        let more_may_follow = matches!(input, Input::Line(_));
        if lines.blocking_send(input).is_err() || !more_may_follow || next_wanted.recv().is_err() {
            return;
        }
    }
}

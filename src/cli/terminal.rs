//! What the CLI lets reach a terminal. Item output, task names and error
//! messages are written by whoever submitted the task; on a terminal their
//! control characters are commands (erase a line, set the window title,
//! write the clipboard with OSC 52). So when a stream is a terminal, C0 and
//! C1 control characters other than `\n` and `\t`, and DEL, are shown
//! escaped (`\x1b`, `\r`'s `\x0d`, `\x9b`); bytes that are not UTF-8 are
//! shown the same way. Output to a pipe or a file, or with `--raw`, is
//! written byte for byte.
//!
//! Every client command and `dts run` print through a [`Console`] (or a
//! [`Sanitized`] writer), so a call site cannot forget the escaping;
//! `main` prints its error messages through [`stderr`].

use indicatif::{ProgressBar, ProgressStyle};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Stderr, Stdout, Write};
use std::time::Instant;

/// Whether control characters pass through a [`Sanitized`] writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Control characters and non-UTF-8 bytes are shown as `\xNN`.
    Escape,
    /// Bytes are written as they are.
    Raw,
}

impl Mode {
    /// Escaping for a stream that is a terminal, unless the user asked for
    /// `raw` bytes; never for a pipe or a file, whose reader gets exactly
    /// what the items wrote.
    pub fn for_stream(is_terminal: bool, raw: bool) -> Mode {
        if is_terminal && !raw {
            Mode::Escape
        } else {
            Mode::Raw
        }
    }

    /// JSON text as this mode shows it. serde_json escapes C0 controls
    /// already, but writes DEL and C1 controls as they are; here they
    /// become `\u007f`-style escapes, which keeps the JSON valid and its
    /// value unchanged (outside strings JSON text is plain ASCII).
    pub fn show_json(self, json: &str) -> Cow<'_, str> {
        if self == Mode::Raw || !json.chars().any(is_control) {
            return Cow::Borrowed(json);
        }
        let mut shown = String::with_capacity(json.len() + 16);
        for c in json.chars() {
            if is_control(c) {
                let _ = write!(shown, "\\u{:04x}", u32::from(c));
            } else {
                shown.push(c);
            }
        }
        Cow::Owned(shown)
    }
}

/// Whether `c` is shown escaped on a terminal: the C0 controls but `\n` and
/// `\t` (so `\r` too, which can overwrite a line), DEL and the C1 controls.
pub fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x08' | '\x0b'..='\x1f' | '\x7f'..='\u{9f}')
}

/// `text` with every [control character](is_control) as `\xNN`: what a
/// [`Sanitized`] writer in [`Mode::Escape`] writes, as a string.
#[cfg(test)]
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    push_escaped(&mut escaped, text);
    Cow::Owned(escaped)
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if is_control(c) {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

/// A writer that passes bytes through in [`Mode::Raw`] and escapes control
/// characters and non-UTF-8 bytes in [`Mode::Escape`]. A UTF-8 sequence cut
/// between two writes is held back until the next write or flush.
pub struct Sanitized<W: Write> {
    inner: W,
    mode: Mode,
    /// The start of a UTF-8 sequence whose other bytes have not come yet.
    pending: Vec<u8>,
}

impl<W: Write> Sanitized<W> {
    pub fn new(inner: W, mode: Mode) -> Sanitized<W> {
        Sanitized {
            inner,
            mode,
            pending: Vec::new(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The wrapped writer.
    #[cfg(test)]
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes the held-back bytes of an unfinished UTF-8 sequence, escaped.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut shown = String::new();
        for byte in std::mem::take(&mut self.pending) {
            let _ = write!(shown, "\\x{byte:02x}");
        }
        self.inner.write_all(shown.as_bytes())
    }
}

impl<W: Write> Write for Sanitized<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.mode == Mode::Raw {
            return self.inner.write(buf);
        }
        let joined;
        let bytes = if self.pending.is_empty() {
            buf
        } else {
            let mut all = std::mem::take(&mut self.pending);
            all.extend_from_slice(buf);
            joined = all;
            &joined[..]
        };
        let mut shown = String::with_capacity(bytes.len());
        let mut chunks = bytes.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            push_escaped(&mut shown, chunk.valid());
            let invalid = chunk.invalid();
            let unfinished = chunks.peek().is_none()
                && matches!(std::str::from_utf8(invalid), Err(e) if e.error_len().is_none());
            if unfinished {
                self.pending = invalid.to_vec();
            } else {
                for byte in invalid {
                    let _ = write!(shown, "\\x{byte:02x}");
                }
            }
        }
        self.inner.write_all(shown.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for Sanitized<W> {
    fn drop(&mut self) {
        // Nobody is left to report an error to.
        let _ = self.flush();
    }
}

/// `n` and `noun`, plural unless `n` is 1: "1 item", "2 items".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Standard output, escaped when it is a terminal and not `raw`.
pub fn stdout(raw: bool) -> Sanitized<Stdout> {
    let stdout = io::stdout();
    let mode = Mode::for_stream(stdout.is_terminal(), raw);
    Sanitized::new(stdout, mode)
}

/// Standard error, escaped when it is a terminal and not `raw`.
pub fn stderr(raw: bool) -> Sanitized<Stderr> {
    let stderr = io::stderr();
    let mode = Mode::for_stream(stderr.is_terminal(), raw);
    Sanitized::new(stderr, mode)
}

/// The two streams a command prints to, each escaped according to whether
/// it is a terminal.
pub struct Console {
    pub out: Sanitized<Stdout>,
    pub err: Sanitized<Stderr>,
}

impl Console {
    pub fn new(raw: bool) -> Console {
        Console {
            out: stdout(raw),
            err: stderr(raw),
        }
    }
}

/// The progress bar `dts watch` and `dts run --bar` draw on standard
/// error: indicatif hides it when standard error is not a terminal.
pub fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Where the work a progress bar shows stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// Items still run; with the rate once one has ended while watching.
    Running(Option<f64>),
    /// Nothing more will run: no rate or time left.
    Ended,
}

/// The text beside a progress bar: `label`, items done of all, failures as
/// they happen, and once items are ending, the rate and time left.
pub fn progress_text(
    label: &str,
    done: u64,
    total: u64,
    failed: u64,
    progress: Progress,
) -> String {
    let mut text = format!("{label}{done}/{}", count(total, "item"));
    if failed > 0 {
        text.push_str(&format!(", {failed} failed"));
    }
    match progress {
        Progress::Ended => {}
        Progress::Running(Some(rate)) => {
            let left = total.saturating_sub(done) as f64 / rate;
            text.push_str(&format!(
                ", {}/s, eta {}",
                one_decimal(rate),
                duration(left.ceil() as u64)
            ));
        }
        Progress::Running(None) if done == 0 => text.push_str(", starting"),
        Progress::Running(None) => {}
    }
    text
}

/// Items done per second since watching began: none until an item has
/// ended while watching, so a bar never shows a rate of 0 or an eta of 0.
pub struct Rate {
    since: Instant,
    done_then: u64,
}

impl Rate {
    pub fn new(done: u64) -> Rate {
        Rate {
            since: Instant::now(),
            done_then: done,
        }
    }

    pub fn per_sec(&self, done: u64) -> Option<f64> {
        let secs = self.since.elapsed().as_secs_f64();
        let ended = done.saturating_sub(self.done_then);
        (ended > 0 && secs > 0.0).then(|| ended as f64 / secs)
    }
}

/// `rate` with at most one decimal: `12`, `2.5`, `0.3`.
fn one_decimal(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        let text = format!("{rate:.1}");
        text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
    }
}

/// `secs` as `42s`, `3m 05s` or `2h 01m`.
fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(mode: Mode, writes: &[&[u8]]) -> Vec<u8> {
        let mut writer = Sanitized::new(Vec::new(), mode);
        for bytes in writes {
            writer.write_all(bytes).unwrap();
        }
        writer.flush().unwrap();
        writer.get_ref().clone()
    }

    #[test]
    fn escape_sequences_an_item_prints_reach_a_terminal_as_visible_text() {
        let hostile = "\x1b]52;c;aGk=\x07\x1b[2K\x1b]0;title\x07\u{9b}31m\r\x7f\0";
        assert_eq!(
            escape(hostile),
            "\\x1b]52;c;aGk=\\x07\\x1b[2K\\x1b]0;title\\x07\\x9b31m\\x0d\\x7f\\x00"
        );
    }

    #[test]
    fn newlines_tabs_and_printable_unicode_are_left_alone() {
        let text = "line\tcolumn\nhéllo ✓ 日本語 🎉 \u{a0}\\x1b";
        assert!(matches!(escape(text), Cow::Borrowed(_)));
        assert_eq!(through(Mode::Escape, &[text.as_bytes()]), text.as_bytes());
    }

    #[test]
    fn the_escaping_writer_leaves_no_control_byte_in_its_output() {
        let every_byte: Vec<u8> = (0..=255).collect();
        let shown = through(Mode::Escape, &[&every_byte]);
        for byte in shown {
            assert!(
                byte == b'\n' || byte == b'\t' || (0x20..0x7f).contains(&byte),
                "byte {byte:#04x} got through"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(through(Mode::Escape, &[b"a\x9bb\xffc"]), b"a\\x9bb\\xffc");
    }

    #[test]
    fn a_character_split_between_two_writes_is_written_whole() {
        let c1 = "\u{9b}".as_bytes();
        let check = "✓".as_bytes();
        assert_eq!(
            through(
                Mode::Escape,
                &[&c1[..1], &c1[1..], &check[..2], &check[2..]]
            ),
            "\\x9b✓".as_bytes()
        );
    }

    #[test]
    fn an_unfinished_character_at_the_end_is_shown_as_hex_on_flush() {
        assert_eq!(through(Mode::Escape, &[b"ok\xe2\x9c"]), b"ok\\xe2\\x9c");
    }

    #[test]
    fn raw_mode_passes_every_byte_through() {
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(through(Mode::Raw, &[&every_byte]), every_byte);
    }

    #[test]
    fn only_a_terminal_without_raw_gets_escapes() {
        assert_eq!(Mode::for_stream(true, false), Mode::Escape);
        assert_eq!(Mode::for_stream(true, true), Mode::Raw);
        assert_eq!(Mode::for_stream(false, false), Mode::Raw);
        assert_eq!(Mode::for_stream(false, true), Mode::Raw);
    }

    #[test]
    fn rates_have_one_decimal_and_times_left_are_minutes_and_hours() {
        assert_eq!(one_decimal(123.456), "123");
        assert_eq!(one_decimal(2.0), "2");
        assert_eq!(one_decimal(0.25), "0.2");
        assert_eq!(duration(125), "2m 05s");
        assert_eq!(duration(3_700), "1h 01m");
        assert_eq!(
            progress_text("", 3, 10, 1, Progress::Running(Some(1.0))),
            "3/10 items, 1 failed, 1/s, eta 7s"
        );
        assert_eq!(progress_text("", 10, 10, 0, Progress::Ended), "10/10 items");
    }

    #[test]
    fn json_for_a_terminal_stays_valid_json_with_the_same_value() {
        let value = serde_json::json!({"stdout": "\x1b[2K\u{9b}\x7f ✓"});
        let json = value.to_string();
        let shown = Mode::Escape.show_json(&json);
        assert!(!shown.chars().any(is_control), "{shown}");
        let parsed: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(parsed, value);
        assert_eq!(Mode::Raw.show_json(&json), json);
    }
}

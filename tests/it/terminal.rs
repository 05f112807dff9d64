//! dts on a real terminal: the program runs as the session leader of a
//! pseudo-terminal that is its controlling terminal, in cooked mode, and
//! Ctrl-C is typed (`\x03`), so the terminal driver itself sends SIGINT to
//! the foreground process group, as it does for a user at a shell.

use crate::cli_hardening::open_pty;
use crate::common::{DtsUp, dts_binary, text};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// A program on a terminal, and everything it has shown so far.
struct OnTerminal {
    child: Child,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// Says when the screen has everything: the terminal closed.
    closed: std::sync::mpsc::Receiver<()>,
}

impl OnTerminal {
    fn start(args: &[&str]) -> OnTerminal {
        let (master, slave) = open_pty();
        let mut command = Command::new(dts_binary());
        command
            .args(args)
            .env_remove("DTS_AUTH_TOKEN")
            .env("DTS_LOG", "warn")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the child makes
        // itself a session leader and takes its stdin (the slave) as its
        // controlling terminal, which makes it the foreground process group.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start dts on a terminal");
        drop(command);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let shown = Arc::clone(&screen);
        let (close, closed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            // ends: the master reads EIO once no process holds the slave.
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => shown.lock().unwrap().extend_from_slice(&buffer[..n]),
                }
            }
            let _ = close.send(());
        });
        OnTerminal {
            child,
            master,
            screen,
            closed,
        }
    }

    fn screen(&self) -> String {
        text(&self.screen.lock().unwrap())
    }

    /// Waits until the screen shows `what`.
    fn wait_for_screen(&self, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        // ends: at the deadline.
        while !self.screen().contains(what) {
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {what:?}; it shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types Ctrl-C, waits for the program to exit and for the screen to
    /// show all it wrote, and returns its exit code.
    fn ctrl_c(&mut self) -> Option<i32> {
        self.master.write_all(b"\x03").unwrap();
        let code = dts_testkit::wait_for_exit(&mut self.child, DEADLINE, "dts after Ctrl-C").code();
        self.closed
            .recv_timeout(DEADLINE)
            .expect("the terminal to close once dts exited");
        code
    }
}

#[tokio::test]
async fn submit_wait_on_a_terminal_draws_the_bar_and_ctrl_c_says_the_task_keeps_running() {
    let up = DtsUp::start(&[]);
    let mut shown = OnTerminal::start(&[
        "submit", "sleep 60", ":::", "a", "--wait", "--server", &up.base,
    ]);
    shown.wait_for_screen("0/1 item, starting");
    let code = shown.ctrl_c();
    let screen = shown.screen();
    assert_eq!(code, Some(130), "{screen}");
    let id = screen
        .split("submitted task ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("the task is named: {screen}"))
        .to_string();
    assert!(
        screen.contains(&format!("task {id} keeps running on the server.")),
        "{screen}"
    );
    assert!(
        screen.contains(&format!(
            "to cancel it: dts cancel {id} --server {}",
            up.base
        )),
        "{screen}"
    );
    assert_eq!(up.task(&id).await["status"], "INPROGRESS");
}

#[test]
fn dts_run_on_a_terminal_stops_its_items_on_ctrl_c_and_says_so() {
    // In the command line of the item's shell and of its `sleep` alike
    // (the `; true` keeps bash from exec'ing sleep in its place).
    let marker = format!("60.{}", std::process::id());
    let started = tempfile::TempDir::new().unwrap();
    let script = format!(
        "touch {}/\"$1\"; sleep {marker}; true",
        started.path().display()
    );
    let mut shown = OnTerminal::start(&["run", "--bar", "-j", "2", &script, "a", "b"]);
    shown.wait_for_screen("0/2 items");
    let deadline = Instant::now() + DEADLINE;
    // ends: at the deadline.
    while !(started.path().join("a").exists() && started.path().join("b").exists()) {
        assert!(
            Instant::now() < deadline,
            "both items to start:\n{}",
            shown.screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = shown.ctrl_c();
    assert_eq!(code, Some(130), "{}", shown.screen());
    assert!(
        shown
            .screen()
            .contains("dts: interrupted: killed 2 running items, 0 of 2 done"),
        "{}",
        shown.screen()
    );
    let deadline = Instant::now() + DEADLINE;
    // ends: at the deadline.
    while running_with(&marker, shown.child.id()) {
        assert!(
            Instant::now() < deadline,
            "items with {marker} outlived dts run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process other than `dts` (whose own command line holds the
/// script) has a command line holding `marker`: an item.
fn running_with(marker: &str, dts: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        if entry.file_name().to_str() == Some(&dts.to_string()) {
            return false;
        }
        std::fs::read(entry.path().join("cmdline"))
            .map(|cmdline| {
                cmdline
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes())
            })
            .unwrap_or(false)
    })
}

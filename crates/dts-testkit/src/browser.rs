//! A headless Chromium driven over WebDriver (chromedriver on a free
//! loopback port), for the dashboard's browser tests.
//!
//! The machine running the tests has no network: the flags turn off
//! everything Chromium would fetch by itself (updates, sync, QUIC probes),
//! so a test's only traffic is to the dts it started. Each browser gets a
//! fresh profile directory, so no cookie outlives its test.

use crate::process::{free_port, wait_for_port};
use fantoccini::ClientBuilder;
pub use fantoccini::{self, Client, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// Set (to anything) where the browser tests must run: without the
/// programs they then fail instead of skipping.
pub const REQUIRE_BROWSER: &str = "DTS_TEST_REQUIRE_BROWSER";

/// A chromedriver with one Chromium session; both are killed when dropped.
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl std::ops::Deref for Browser {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// `name` on `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height`
    /// window. `None` (after saying why on stderr) when `chromium` or
    /// `chromedriver` is not installed and [`REQUIRE_BROWSER`] is unset;
    /// with it set, their absence fails the test.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
        else {
            assert!(
                std::env::var_os(REQUIRE_BROWSER).is_none(),
                "chromium and chromedriver must be installed ({REQUIRE_BROWSER} is set): run scripts/install-test-deps.sh"
            );
            eprintln!(
                "SKIPPED: chromium or chromedriver is not installed (scripts/install-test-deps.sh installs them)"
            );
            return None;
        };
        let profile = TempDir::new().expect("a temp dir for the browser profile");
        let port = free_port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so dropping the browser can kill
            // chromedriver and every Chromium process it started at once.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        if !wait_for_port(port, Duration::from_secs(30)) {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("chromedriver did not listen on port {port} within 30 s");
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            "--password-store=basic".into(),
            // A password form must not open the password manager's prompts,
            // which would block the page the test drives.
            "--disable-features=PasswordLeakDetection,PasswordManagerOnboarding,AutofillServerCommunication".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": args,
                "prefs": {
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                    "profile.password_manager_leak_detection": false,
                },
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match client {
            Ok(client) => client,
            Err(error) => {
                kill_group(&mut driver);
                panic!("chromedriver could not start a Chromium session: {error}");
            }
        };
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Ends the session (Chromium exits), then chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        kill_group(&mut self.driver);
    }
}

fn kill_group(driver: &mut Child) {
    if let Ok(Some(_)) = driver.try_wait() {
        return;
    }
    // SAFETY: signalling the process group of our own child, which it
    // leads (process_group(0)); it holds only chromedriver and its browser.
    unsafe { libc::kill(-(driver.id() as i32), libc::SIGKILL) };
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

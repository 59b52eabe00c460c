//! A headless Debian `chromium` driven over WebDriver (`chromedriver` + fantoccini), for the web console's tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// The browser window: wide enough for the console's toolbar, tall enough for a few cells.
const WINDOW: &str = "--window-size=1280,1000";

/// A chromium session; its chromedriver is killed when dropped (call [`Browser::close`] first to end chromium).
pub(crate) struct Browser {
    /// The WebDriver session.
    pub(crate) client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless chromium. Without them: fails when `CI` is set, else returns `None`
    /// after saying loudly that the test did not run.
    pub(crate) async fn start() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver")) else {
            let missing = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)";
            assert!(std::env::var_os("CI").is_none(), "{missing}: CI must run the web console's browser test");
            eprintln!("\n*** SKIPPED: {missing}: the web console's browser test did not run ***\n");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::Builder::new().prefix("ci-chromium-").tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox", // chromium's own sandbox refuses to run as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            WINDOW,
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({ "goog:chromeOptions": { "binary": chromium, "args": args } });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connected = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match connected {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("waiting for chromedriver: {err}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    panic!("cannot start chromium through chromedriver: {err}");
                }
            }
        };
        Some(Browser { client, driver, _profile: profile })
    }

    /// Ends chromium's session (then chromedriver goes with `Drop`).
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Opens a URL.
    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|err| panic!("opening {url}: {err}"));
    }

    /// Runs JavaScript (a function body; `arguments` holds `args`) and returns what it returns.
    pub(crate) async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|err| panic!("running {script}: {err}"))
    }

    /// Polls `script` until it returns something truthy (within `secs`), and returns that; on timeout panics
    /// with `what` and the page's text.
    pub(crate) async fn wait_for(&self, what: &str, secs: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let value = self.eval(script, vec![]).await;
            if !matches!(&value, Value::Null | Value::Bool(false)) && value != json!("") && value != json!(0) {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.eval("return document.body.innerText", vec![]).await;
                let _ = self.save_screenshot(&artifact_dir().join("failure.png")).await;
                panic!("timed out after {secs} s waiting for {what}; the page shows:\n{}", page.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the element `css` and types into what then has the focus (an input, or CodeMirror's hidden
    /// textarea when `css` is the editor).
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        self.click(css).await;
        let focused = self.client.active_element().await.expect("a focused element");
        focused.send_keys(text).await.unwrap_or_else(|err| panic!("typing into {css}: {err}"));
    }

    /// Clicks the element `css`.
    pub(crate) async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|err| panic!("finding {css}: {err}"));
        element.click().await.unwrap_or_else(|err| panic!("clicking {css}: {err}"));
    }

    /// Takes a screenshot of the window as PNG into `path`; returns its bytes.
    pub(crate) async fn save_screenshot(&self, path: &Path) -> Vec<u8> {
        let png = self.client.screenshot().await.expect("taking a screenshot");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &png).unwrap();
        png
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Shift+Enter as one `send_keys` text: the modifier stays down for the key after it.
pub(crate) fn shift_enter() -> String {
    [char::from(Key::Shift), char::from(Key::Enter), char::from(Key::Shift)].iter().collect()
}

/// Where the browser tests leave their screenshots: `target/console-e2e`.
pub(crate) fn artifact_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent").join("console-e2e")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

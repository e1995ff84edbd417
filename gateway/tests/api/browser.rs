//! A real, headless Chromium for the storefront's tests, driven over WebDriver
//! (fantoccini → Debian's `chromedriver` → Debian's `chromium`; nothing downloads a
//! browser). One browser per test. Also what a test asks the browser afterwards: its
//! console (errors there fail the tests), the response headers it saw (Chrome's
//! performance log), and screenshots saved under `target/storefront-screenshots/`.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::helpers::{ChildGuard, free_port, wait_for_port};

/// How long a test waits for something to appear on the page.
pub const WAIT: Duration = Duration::from_secs(20);

/// One request the browser sent and, if one came, its answer.
#[derive(Debug)]
pub struct Exchange {
    pub request_headers: Value,
    /// None: no answer was received (yet).
    pub status: Option<u64>,
    pub headers: Value,
}

impl Exchange {
    /// A response header (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// A request header (names compared without case).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        find_header(&self.request_headers, name)
    }
}

fn find_header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// Windows narrower than this are phones (Chrome's mobile emulation).
const PHONE_MAX_WIDTH: u32 = 600;

/// A headless Chromium session and the chromedriver that runs it.
pub struct Browser {
    pub client: Client,
    /// Base URL of the chromedriver, for the log endpoints fantoccini has no call for.
    driver_url: String,
    session: String,
    name: String,
    shots: u32,
    driver: ChildGuard,
}

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Where screenshots go: `target/storefront-screenshots/` (next to the test binary's
/// `target/<profile>/deps/`).
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    target.join("storefront-screenshots")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width` × `height` window.
    /// Panics with the install command if either is not on `PATH`.
    pub async fn start(name: &str, width: u32, height: u32) -> Self {
        let chromedriver = on_path(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver is not on PATH: the browser tests need Debian's Chromium and its \
                 WebDriver (`apt-get install -y chromium chromium-driver`; .ci/run installs them)"
            )
        });
        let chromium =
            on_path(&["chromium", "chromium-browser", "google-chrome"]).unwrap_or_else(|| {
                panic!(
                    "chromium is not on PATH: `apt-get install -y chromium chromium-driver` \
                     (.ci/run installs them)"
                )
            });
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the browsers it starts can be stopped with it
            // even when a test panics before closing the session.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = ChildGuard::new(child);
        wait_for_port(port);
        let driver_url = format!("http://127.0.0.1:{port}");

        let mut chrome_options = json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                // Tests run as root in CI, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--no-first-run",
                format!("--window-size={width},{height}"),
            ],
        });
        if width < PHONE_MAX_WIDTH {
            // A desktop window cannot be narrower than about 500 px: a phone's viewport
            // is Chrome's device emulation (exact width, touch, mobile layout).
            chrome_options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": true },
            });
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": chrome_options,
            "goog:loggingPrefs": { "browser": "ALL", "performance": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a Chromium session starts");
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        Self {
            client,
            driver_url,
            session,
            name: name.to_owned(),
            shots: 0,
            driver,
        }
    }

    /// Opens `url` and waits for the storefront to have loaded its config and first page.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
        self.wait_for("body[data-ready='true']").await;
    }

    /// The first element matching `css`, waiting for it up to [`WAIT`].
    pub async fn wait_for(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page within {WAIT:?}: {e}"))
    }

    /// Waits until `script` (a JS expression) is truthy; panics naming `what`.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self
                .client
                .execute(&format!("return Boolean({script});"), vec![])
                .await
                .expect("script runs");
            if value == Value::Bool(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {WAIT:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `css` (waiting for it).
    ///
    /// Read in the page in one step, never through an element handle: the storefront
    /// re-renders while it polls an order, and a handle found before a re-render is
    /// stale after it.
    pub async fn text(&self, css: &str) -> String {
        self.read(css, "innerText").await
    }

    /// The attribute `name` of the first element matching `css` (waiting for both).
    pub async fn attr(&self, css: &str, name: &str) -> String {
        self.read(css, &format!("getAttribute({})", Value::from(name)))
            .await
    }

    /// `document.querySelector(css).<expression>` once it is a string, within [`WAIT`].
    async fn read(&self, css: &str, expression: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.{expression} : null;",
            Value::from(css)
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Value::String(value) = self.eval(&script).await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{css}` with {expression} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the first element matching `css` (waiting for it), finding it again if a
    /// re-render made the one found stale.
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.wait_for(css).await.click().await {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() < deadline && is_stale(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("click `{css}`: {e}"),
            }
        }
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    /// Saves a screenshot as `target/storefront-screenshots/<test>-<n>-<step>.png` and
    /// returns its path.
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.shots += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{}-{:02}-{step}.png", self.name, self.shots));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Copies the latest screenshot to `to` (the README's picture, under docs/).
    pub fn keep(&self, from: &Path, to: &Path) {
        std::fs::copy(from, to).expect("copy screenshot");
    }

    /// Entries of the chromedriver log `kind` (`browser`: the console; `performance`:
    /// DevTools events) since the last call.
    async fn log(&self, kind: &str) -> Vec<Value> {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session
            ))
            .json(&json!({ "type": kind }))
            .send()
            .await
            .expect("chromedriver log");
        let body: Value = response.json().await.expect("log JSON");
        body["value"].as_array().cloned().unwrap_or_default()
    }

    /// Console messages at level SEVERE (errors, failed loads, CSP violations) since the
    /// last call, except those containing one of `expected` (e.g. the 409 a test
    /// provokes on purpose: Chrome logs every 4xx/5xx fetch as an error).
    pub async fn console_errors(&self, expected: &[&str]) -> Vec<String> {
        self.log("browser")
            .await
            .into_iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .filter_map(|entry| entry["message"].as_str().map(str::to_owned))
            .filter(|message| !expected.iter().any(|e| message.contains(e)))
            .collect()
    }

    /// The requests for `method` `url_suffix` the browser sent since the last call, with
    /// the answers it received, from Chrome's performance log (what the page really
    /// sent and got, headers included).
    pub async fn exchanges(&self, method: &str, url_suffix: &str) -> Vec<Exchange> {
        let events: Vec<Value> = self
            .log("performance")
            .await
            .into_iter()
            .filter_map(|entry| serde_json::from_str(entry["message"].as_str()?).ok())
            .map(|m: Value| m["message"].clone())
            .collect();
        let of = |kind: &str| -> Vec<&Value> {
            events
                .iter()
                .filter(|e| e["method"] == kind)
                .map(|e| &e["params"])
                .collect()
        };
        let responses = of("Network.responseReceived");
        of("Network.requestWillBeSent")
            .into_iter()
            .filter(|sent| {
                sent["request"]["method"] == method
                    && sent["request"]["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(url_suffix))
            })
            .map(|sent| {
                let answer = responses
                    .iter()
                    .find(|r| r["requestId"] == sent["requestId"])
                    .map(|r| &r["response"]);
                Exchange {
                    request_headers: sent["request"]["headers"].clone(),
                    status: answer.and_then(|a| a["status"].as_u64()),
                    headers: answer.map_or(Value::Null, |a| a["headers"].clone()),
                }
            })
            .collect()
    }

    /// Asserts that the console shows no error (other than `expected` ones), then closes
    /// the browser.
    pub async fn finish(self, expected: &[&str]) {
        let errors = self.console_errors(expected).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        self.client
            .clone()
            .close()
            .await
            .expect("close the session");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Whatever happened, no Chromium outlives its test: stop chromedriver's whole
        // process group (the guard then reaps chromedriver itself).
        if let Some(child) = self.driver.0.as_ref() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
        }
    }
}

/// Whether WebDriver says the element went away (the page re-rendered it).
fn is_stale(error: &fantoccini::error::CmdError) -> bool {
    error.to_string().contains("stale element")
}

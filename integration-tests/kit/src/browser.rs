//! A real Chromium (Debian's `chromium`), driven headless through `chromedriver`'s W3C
//! WebDriver HTTP API by a small client: new session, navigate, find, click, type, read
//! text, run a script, take a screenshot, and read the browser's console for errors.
//!
//! In CI (`CI` set) a missing `chromium` or `chromedriver` fails the test; elsewhere the
//! test skips, saying so loudly. Each browser has its own temporary profile, and both the
//! driver and the browser are stopped (and the profile removed) when it is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::net::free_port;

/// The key of an element reference in WebDriver's JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs the two.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
}

/// An element found on the page.
#[derive(Clone, Debug)]
pub struct Element(String);

/// One line of the browser's console.
#[derive(Clone, Debug)]
pub struct ConsoleLine {
    /// `SEVERE`, `WARNING`, `INFO`, ...
    pub level: String,
    /// What was logged, with where.
    pub message: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a window of `width` by
    /// `height`; `None` (having said why) where they are not installed outside CI.
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        Browser::launch(width, height, None)
    }

    /// The same, as a phone of `width` by `height` CSS pixels (Chromium's device
    /// emulation: a desktop window cannot be narrower than 500 pixels).
    pub fn start_phone(width: u32, height: u32) -> Option<Browser> {
        Browser::launch(
            width.max(500),
            height,
            Some(
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "mobile": true, "touch": true}}),
            ),
        )
    }

    fn launch(width: u32, height: u32, mobile: Option<Value>) -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            return crate::skip_or_fail(
                "Debian's chromium and chromium-driver",
                "`bash scripts/test.sh` (as root) or `apt-get install chromium chromium-driver`",
            );
        }
        let port = free_port();
        let profile = std::env::temp_dir().join(format!("cutover-e2e-chromium-{port}"));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            profile,
        };
        let started = Instant::now();
        while browser.request("GET", "/status", None).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new",
                        // Chromium refuses to run as root with its sandbox.
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        "--disable-extensions",
                        format!("--user-data-dir={}", browser.profile.display()),
                        format!("--window-size={width},{height}"),
                    ],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
            }}
        });
        if let Some(mobile) = mobile {
            capabilities["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["mobileEmulation"] =
                mobile;
        }
        let session = browser
            .request("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| panic!("chromedriver cannot start chromium: {e}"));
        browser.session = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Some(browser)
    }

    /// One WebDriver command: its `value`, or the error chromedriver gave.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| format!("send: {e}"))?;
        // chromedriver keeps the connection open whatever the request says: read the
        // head, then the body its length (or its chunks) says.
        let mut answer = Vec::new();
        let mut buffer = [0u8; 8192];
        let (head, body) = loop {
            let read = stream.read(&mut buffer).map_err(|e| format!("read: {e}"))?;
            if read == 0 {
                return Err(format!(
                    "chromedriver closed the connection: {}",
                    String::from_utf8_lossy(&answer)
                ));
            }
            answer.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&answer).to_string();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let lower = head.to_ascii_lowercase();
            let length = lower.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            });
            let complete = match length {
                Some(length) => body.len() >= length,
                None => body.ends_with("0\r\n\r\n"),
            };
            if complete {
                break (head.to_string(), body.to_string());
            }
        };
        let body = dechunk(&head, &body);
        let value: Value =
            serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
        if head.split(' ').nth(1).is_some_and(|c| c.starts_with('2')) {
            Ok(value["value"].clone())
        } else {
            Err(value["value"].to_string())
        }
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn command(&self, method: &str, rest: &str, body: Option<Value>) -> Value {
        let path = self.session_path(rest);
        self.request(method, &path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {rest} failed: {e}"))
    }

    /// Opens `url` and waits for the page to load.
    pub fn navigate(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// The window's size in CSS pixels.
    pub fn resize(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// The first element matching the CSS `selector`, if any now.
    pub fn find(&self, selector: &str) -> Option<Element> {
        let path = self.session_path("/element");
        self.request(
            "POST",
            &path,
            Some(json!({"using": "css selector", "value": selector})),
        )
        .ok()
        .and_then(|v| v[ELEMENT_KEY].as_str().map(|id| Element(id.to_string())))
    }

    /// How many elements match the CSS `selector` now.
    pub fn count(&self, selector: &str) -> usize {
        self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        )
        .as_array()
        .map_or(0, Vec::len)
    }

    /// Waits up to `limit` for an element matching `selector` whose text satisfies
    /// `good`; panics with what the page showed.
    pub fn wait_text(
        &self,
        selector: &str,
        limit: Duration,
        good: impl Fn(&str) -> bool,
    ) -> (Element, String) {
        let started = Instant::now();
        let mut last = None;
        loop {
            if let Some(element) = self.find(selector) {
                let path = self.session_path(&format!("/element/{}/text", element.0));
                if let Ok(text) = self.request("GET", &path, None) {
                    let text = text.as_str().unwrap_or_default().to_string();
                    if good(&text) {
                        return (element, text);
                    }
                    last = Some(text);
                }
            }
            assert!(
                started.elapsed() < limit,
                "'{selector}' did not show what was expected within {limit:?}; it showed {last:?}; the page's text:\n{}\nconsole: {:?}",
                self.page_text(),
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `limit` for an element matching `selector`.
    pub fn wait_find(&self, selector: &str, limit: Duration) -> Element {
        self.wait_text(selector, limit, |_| true).0
    }

    /// The element's visible text.
    pub fn text(&self, element: &Element) -> String {
        self.command("GET", &format!("/element/{}/text", element.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The whole page's visible text, for failure messages.
    pub fn page_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Clicks the element, as a person would (it must be visible and enabled).
    pub fn click(&self, element: &Element) {
        self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        );
    }

    /// Types `text` into the element.
    pub fn type_text(&self, element: &Element, text: &str) {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        );
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns
    /// what it returns.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.command("GET", "/screenshot", None);
        let png = base64_decode(data.as_str().unwrap_or_default()).expect("a base64 screenshot");
        std::fs::write(path, png).expect("screenshot written");
    }

    /// The console's lines since the last call (chromedriver hands each out once).
    pub fn console(&self) -> Vec<ConsoleLine> {
        self.command("POST", "/se/log", Some(json!({"type": "browser"})))
            .as_array()
            .into_iter()
            .flatten()
            .map(|line| ConsoleLine {
                level: line["level"].as_str().unwrap_or_default().to_string(),
                message: line["message"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// The console's errors since the last call: every `SEVERE` line (uncaught
    /// exceptions, failed loads, policy violations, `console.error`).
    pub fn console_errors(&self) -> Vec<String> {
        self.console()
            .into_iter()
            .filter(|line| line.level == "SEVERE")
            .map(|line| line.message)
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.request("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The body of an HTTP/1.1 answer whose head says `Transfer-Encoding: chunked`,
/// reassembled; else the body as it is.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64 (with padding) to bytes; `None` on a character outside it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(base64_decode("a$").as_deref(), None);
    }

    #[test]
    fn chunked_bodies_are_reassembled() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked";
        assert_eq!(dechunk(head, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(dechunk("HTTP/1.1 200 OK", "plain"), "plain");
    }
}

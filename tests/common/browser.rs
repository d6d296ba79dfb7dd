//! A headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the browser
//! tests: open a page, evaluate JavaScript in it, wait for conditions, collect console errors and
//! uncaught exceptions, take screenshots. Network access other than loopback is switched off.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// A running headless browser with one page.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    /// Console errors and uncaught exceptions seen so far.
    pub errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser process until a `Browser` owns it: killed if starting fails half-way, so a
/// panic there leaves no Chromium behind.
struct Starting(Option<std::process::Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` on the PATH (installed by the test
/// command and CI).
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

impl Browser {
    /// Starts the browser with a blank page.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--metrics-recording-only",
                "--window-size=1280,900",
                // Nothing but loopback: any other host resolves nowhere.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): install Debian's chromium (apt-get install chromium)",
                    chromium()
                )
            });
        let mut starting = Starting(Some(child));
        let stderr = BufReader::new(starting.0.as_mut().unwrap().stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open its DevTools port within 30 s");
        let host = url.trim_start_matches("ws://").split('/').next().unwrap().to_string();
        let stream = TcpStream::connect(&host).unwrap();
        // The handshake waits as long as a loaded machine needs (a short read time-out here
        // interrupted it when several browser tests ran beside a cluster run); reads after it
        // time out quickly so that polling loops stay responsive.
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools WebSocket");
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut b = Browser {
            child: starting.0.take().expect("the child is still ours"),
            ws,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b.call("Log.enable", json!({}));
        b
    }

    /// Sends one DevTools command (to the page once attached) and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method} within 30 s");
            let m = match self.ws.read() {
                Ok(Message::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => panic!("DevTools connection: {e}"),
            };
            if m["id"] == json!(id) {
                if let Some(err) = m.get("error") {
                    panic!("{method}: {err}");
                }
                return m["result"].clone();
            }
            self.note_event(&m);
        }
    }

    fn note_event(&mut self, m: &Value) {
        match m["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!("exception: {}", m["params"]["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if m["params"]["type"] == "error" => {
                self.errors.push(format!("console.error: {}", m["params"]["args"]))
            }
            Some("Log.entryAdded") if m["params"]["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", m["params"]["entry"]["text"]))
            }
            _ => {}
        }
    }

    /// Opens `url` in the page.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expression}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits up to `timeout` until `expression` is truthy; returns its value.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(&format!(
                "(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()"
            ));
            let truthy = !(v.is_null() || v == json!(false) || v == json!(0) || v == json!(""));
            if truthy {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "`{expression}` not true within {timeout:?}; page text:\n{}",
                self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Clicks the element `selector`.
    pub fn click(&mut self, selector: &str) {
        self.eval(&format!("document.querySelector({}).click()", json!(selector)));
    }

    /// Writes a PNG screenshot of the page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

//! A small W3C WebDriver client (the standard protocol chromedriver speaks), over the
//! reqwest the project already uses: new session, navigate, find, click, type, run a
//! script, screenshot. Starts Debian's `chromedriver` with headless `chromium`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The first of `names` found on PATH.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or says why it could not.
    pub async fn start(width: u32, height: u32) -> Result<Self, String> {
        Self::launch(width, height, false, None).await
    }

    /// [`Self::start`] with the browser's clock in time zone `tz` (an IANA name).
    pub async fn start_in_zone(width: u32, height: u32, tz: &str) -> Result<Self, String> {
        Self::launch(width, height, false, Some(tz)).await
    }

    /// A phone: Chromium's mobile emulation with a `width` CSS-pixel viewport (a desktop
    /// window is never narrower than 500 px), touch and a mobile user agent.
    pub async fn start_phone(width: u32, height: u32) -> Result<Self, String> {
        Self::launch(width, height, true, None).await
    }

    async fn launch(
        width: u32,
        height: u32,
        phone: bool,
        tz: Option<&str>,
    ) -> Result<Self, String> {
        let driver_bin = on_path(&["chromedriver"])
            .ok_or("chromedriver is not on PATH (apt-get install chromium-driver)")?;
        let chrome = on_path(&["chromium", "chromium-browser", "google-chrome"])
            .ok_or("chromium is not on PATH (apt-get install chromium)")?;
        let port = super::app::free_port();
        let mut driver = Command::new(driver_bin);
        if let Some(tz) = tz {
            driver.env("TZ", tz);
        }
        let driver = driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let base = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == json!(true)
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            return Err("chromedriver did not become ready".into());
        }
        let mut options = json!({
            "binary": chrome,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--hide-scrollbars",
                     format!("--window-size={},{}", width.max(500), height)]
        });
        if phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0, "touch": true}
            });
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let session = r["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {r}"))?;
        Ok(Self {
            http,
            session: format!("{base}/session/{session}"),
            driver,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .await
            .expect("webdriver request")
            .json()
            .await
            .expect("webdriver answer");
        if v["value"]["error"].is_string() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {css:?}: {v}"))
            .to_owned()
    }

    /// A real click (the driver moves the pointer there).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments[0]` is `arg`) in the page.
    pub async fn eval(&self, script: &str, arg: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": [arg]})),
        )
        .await
    }

    /// The text of the first element matching `css`, or None.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.eval(
            "var e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!(css),
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    pub async fn count(&self, css: &str) -> usize {
        self.eval(
            "return document.querySelectorAll(arguments[0]).length;",
            json!(css),
        )
        .await
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// Polls until an element matches `css` (bounded); panics with what the page shows.
    pub async fn wait_for(&self, css: &str) {
        for _ in 0..600 {
            if self.count(css).await > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shown = self.text("body").await.unwrap_or_default();
        panic!("nothing matched {css:?} within the bound; the page shows:\n{shown}");
    }

    /// Saves a PNG of what the browser shows. A directory that cannot be written (a
    /// read-only checkout in CI) is reported, not a failure: the picture is a by-product.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64"))
            .expect("png");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, png));
        if let Err(e) = written {
            eprintln!("screenshot {} not written: {e}", path.display());
        }
    }

    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

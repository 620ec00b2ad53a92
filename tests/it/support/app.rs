//! `spawn_app()`: the real binary, started as users start it, on 127.0.0.1, talked to
//! over HTTP. Killable with SIGKILL and restartable on the same database and port.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::airtable_double::AirtableDouble;
use super::goapi_double::GoapiDouble;
use super::nca_double::NcaDouble;

pub const GOAPI_SECRET: &str = "test-goapi-webhook-secret";
pub const SIGNING_SECRET: &str = "test-callback-signing-secret-0123456789";
/// Outside --dev the service refuses to start without an admin token; the test client
/// sends it with every request (as an operator's tooling would).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub url: String,
    pub port: u16,
    pub db: PathBuf,
    pub client: reqwest::Client,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

/// A free port now (bound and released), so a restarted server can keep its address:
/// the callback URLs handed to NCA point at it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct AppBuilder {
    env: Vec<(String, String)>,
    port: u16,
    dir: std::sync::Arc<tempfile::TempDir>,
    /// The store's file, when not in `dir` (a filesystem of the test's own).
    db: Option<PathBuf>,
}

impl Default for AppBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AppBuilder {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            env: vec![
                ("GOAPI_WEBHOOK_SECRET".into(), GOAPI_SECRET.into()),
                ("REELSTATE_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
                ("REELSTATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
                ("REELSTATE_EFFECT_BACKOFF_MS".into(), "20".into()),
                ("RUST_LOG".into(), "info".into()),
                // Every double listens on 127.0.0.1, where the track check may not go
                // by default; tests of that refusal set it back to false.
                ("REELSTATE_ALLOW_PRIVATE_URLS".into(), "true".into()),
                // Nobody listens on port 9: tests that need NCA set a double instead.
                ("NCA_API_URL".into(), "http://127.0.0.1:9".into()),
                ("NCA_API_KEY".into(), "unused".into()),
            ],
            port: 0,
            dir: std::sync::Arc::new(dir),
            db: None,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    /// Airtable is the double: its token, base and URL.
    pub fn airtable(self, airtable: &AirtableDouble) -> Self {
        self.env("AIRTABLE_TOKEN", &airtable.token())
            .env("AIRTABLE_BASE_ID", &airtable.base_id())
            .env("AIRTABLE_API_URL", &airtable.url())
    }

    /// NCA is the double.
    pub fn nca(self, nca: &NcaDouble) -> Self {
        self.env("NCA_API_URL", &nca.url())
            .env("NCA_API_KEY", &nca.api_key())
    }

    /// GoAPI is the double.
    pub fn goapi(self, goapi: &GoapiDouble) -> Self {
        self.env("GOAPI_API_URL", &goapi.url())
            .env("GOAPI_API_KEY", &goapi.api_key())
    }

    pub fn without(mut self, k: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self
    }

    /// A fixed port, for tests that restart the server.
    pub fn fixed_port(mut self) -> Self {
        self.port = free_port();
        self
    }

    /// The store's file in `dir` instead (the server's log stays in the builder's own).
    pub fn db_in(mut self, dir: &std::path::Path) -> Self {
        self.db = Some(dir.join("reelstate.db"));
        self
    }

    pub fn db_path(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.dir.path().join("reelstate.db"))
    }

    pub async fn spawn(mut self) -> TestApp {
        let db = self.db_path();
        // Outside --dev the service needs PUBLIC_BASE_URL: here it is the address the
        // app will listen on, so its port is fixed first.
        let set = |k: &str| self.env.iter().any(|(key, v)| key == k && v == "true");
        let dev = set("REELSTATE_DEV_MODE") || set("REELSTATE_SANDBOX");
        if !dev && !self.env.iter().any(|(k, _)| k == "PUBLIC_BASE_URL") {
            if self.port == 0 {
                self.port = free_port();
            }
            let public = format!("http://127.0.0.1:{}", self.port);
            self.env.push(("PUBLIC_BASE_URL".into(), public));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some((_, token)) = self.env.iter().find(|(k, _)| k == "REELSTATE_ADMIN_TOKEN") {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header value"),
            );
        }
        let log = self
            .dir
            .path()
            .join(format!("server-{}.log", rand_suffix()));
        let mut app = TestApp {
            url: String::new(),
            port: self.port,
            db,
            client: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            env: self.env,
            child: None,
            log,
            _dir: self.dir,
        };
        app.start().await;
        app
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The default app: embedded store, dev secrets set, no external services.
pub async fn spawn_app() -> TestApp {
    AppBuilder::new()
        .env("REELSTATE_DEV_MODE", "true")
        .spawn()
        .await
}

impl TestApp {
    async fn start(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reelstate"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REELSTATE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("REELSTATE_DB", &self.db)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start the reelstate binary");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("server did not start; log:\n{}", self.log_text()))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("server exited; log:\n{}", self.log_text()));
        let url = line
            .strip_prefix("reelstate listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        self.url = url;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().expect("pid");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(60), c.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait")
    }

    /// Starts the binary again on the same database and port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start().await;
    }

    pub async fn post_json(&self, path_and_query: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{}", self.url, path_and_query))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// POSTs with the app's client and no body: the status and the answer as sent.
    pub async fn post(&self, path_and_query: &str) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{}", self.url, path_and_query))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// GET with the admin token, when the app has one.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{}", self.url, path));
        if let Some((_, token)) = self.env.iter().find(|(k, _)| k == "REELSTATE_ADMIN_TOKEN") {
            req = req.bearer_auth(token);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the video is in `status` and its effects have all run.
    pub async fn wait_settled(&self, video: &str, status: &str, within: Duration) -> Value {
        self.wait_for_video(video, within, |v| {
            v["status"] == status && v["effects"].as_array().is_some_and(|e| e.is_empty())
        })
        .await
    }

    /// Polls `GET /videos/{id}` until `done` holds, or fails with the last state seen.
    pub async fn wait_for_video<F>(&self, video: &str, timeout: Duration, done: F) -> Value
    where
        F: Fn(&Value) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = Value::Null;
        while tokio::time::Instant::now() < deadline {
            let (status, v) = self.get_json(&format!("/videos/{video}")).await;
            if status == 200 && done(&v) {
                return v;
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "video {video} did not reach the expected state; last seen:\n{last:#}\nserver log tail:\n{}",
            tail(&self.log_text(), 60)
        );
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

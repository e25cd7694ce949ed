//! Helpers of the control-plane tests: `sluice serve` with its REST API as a child process
//! (state and data in a test directory, restartable on the same state), and a small
//! blocking client that speaks the API over real HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, multipart};
use serde_json::{Value, json};

use crate::sluice_bin;
use crate::streams::free_port;

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running `sluice serve` with its control plane; killed when dropped.
pub struct ApiServer {
    child: Option<Child>,
    pub port: u16,
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
    starts: u32,
}

impl ApiServer {
    /// Starts a server keeping its state and data under `work`; `extra` are more `serve` flags.
    pub fn start(work: &Path, extra: &[&str]) -> ApiServer {
        let mut server = ApiServer {
            child: None,
            port: free_port(),
            state_dir: work.join("state"),
            data_dir: work.join("data"),
            log: work.join("serve.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            starts: 0,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("opening the serve log");
        let child = Command::new(sluice_bin())
            .arg("serve")
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra)
            .env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sluice serve");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until `/readyz` answers 200 (the store is loaded and its functions started).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = Client::new();
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send()
                && response.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("sluice serve exited with {status} before it was ready; log:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "sluice serve not ready after 120 s; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self) -> Api {
        self.client(ADMIN_TOKEN)
    }

    pub fn client(&self, token: &str) -> Api {
        Api { base: self.url(""), token: Some(token.to_string()), http: Client::builder().timeout(Duration::from_secs(120)).build().unwrap() }
    }

    pub fn anonymous(&self) -> Api {
        Api { base: self.url(""), token: None, http: Client::new() }
    }

    /// SIGKILL, then a fresh process on the same state, data and port.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL: nothing is drained or saved on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let mut child = self.child.take().expect("the server is running");
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "serve did not stop within {within:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An answer: status, content type and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {} body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `cause` of an error answer, checking it has the API's error shape.
    pub fn cause(&self) -> String {
        let body = self.json();
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "error answer without a message: {body}");
        body["cause"].as_str().expect("error answer without a cause").to_string()
    }
}

/// A blocking API client with one token (or none).
pub struct Api {
    base: String,
    token: Option<String>,
    http: Client,
}

impl Api {
    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Answer { status, content_type, body: response.bytes().expect("reading the body").to_vec() }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
    }

    pub fn post_bytes(&self, path: &str, body: &[u8]) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).body(body.to_vec()))
    }

    /// Creates a tenant (admin); returns its token.
    pub fn create_tenant(&self, name: &str, quotas: Value) -> String {
        let answer = self.post_json("/v1/tenants", &json!({ "name": name, "quotas": quotas }));
        assert_eq!(answer.status, 201, "creating tenant {name}: {}", answer.text());
        answer.json()["token"].as_str().expect("a token").to_string()
    }

    /// `PUT /v1/functions/{name}` with a manifest and component.
    pub fn deploy(&self, name: &str, manifest: &str, component: &[u8]) -> Answer {
        let form = multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part("component", multipart::Part::bytes(component.to_vec()).file_name(format!("{name}.wasm")));
        self.send(self.http.put(format!("{}/v1/functions/{name}", self.base)).multipart(form))
    }

    /// A deploy that must succeed; returns the function document.
    pub fn deploy_ok(&self, name: &str, manifest: &str, component: &[u8]) -> Value {
        let answer = self.deploy(name, manifest, component);
        assert_eq!(answer.status, 201, "deploying {name}: {}", answer.text());
        answer.json()
    }

    pub fn invoke(&self, name: &str, body: &[u8]) -> Answer {
        self.post_bytes(&format!("/v1/functions/{name}/invoke"), body)
    }
}

/// A manifest for a deploy: `name`, a placeholder component path (the upload carries the
/// bytes) and `body` (triggers, sinks, limits, config).
pub fn manifest_text(name: &str, body: &str) -> String {
    format!("name = \"{name}\"\ncomponent = \"{name}.wasm\"\n{body}")
}

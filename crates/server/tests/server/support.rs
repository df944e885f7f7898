//! A real server for tests: SQLite in a temporary directory, bound to 127.0.0.1:0, with a known
//! admin token; stopped cleanly when dropped.

use std::sync::Arc;

use dimmer_store::Store;
pub use dimmer_store::testing::TempDir;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

pub const ADMIN: &str = "dmr_test_admin_token_0123456789";

/// The options of a test server: the defaults without rate limits, which a test that makes
/// many requests on a manual clock (one that never refills a bucket) would otherwise trip. The
/// rate-limit tests set their own.
pub fn options() -> dimmer_server::app::Options {
    dimmer_server::app::Options {
        rate_limits: dimmer_server::service::limits::RateLimits::off(),
        ..dimmer_server::app::Options::default()
    }
}

pub struct TestServer {
    pub base: String,
    /// The server's storage, for tests that look behind the API.
    #[allow(dead_code, reason = "used by some test modules only")]
    pub store: Arc<dyn Store>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = TempDir::new("server");
        let store =
            dimmer_store::open(None, &dir.0, Arc::new(dimmer_domain::SystemClock)).await.expect("open SQLite store");
        Self::start_with(store, dir).await
    }

    pub async fn start_with(store: Arc<dyn Store>, dir: TempDir) -> Self {
        Self::start_with_options(store, dir, options()).await
    }

    pub async fn start_with_options(store: Arc<dyn Store>, dir: TempDir, options: dimmer_server::app::Options) -> Self {
        dimmer_server::app::first_start(store.as_ref()).await.expect("environments");
        dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), Some(ADMIN)).await.expect("admin token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dimmer_server::app::run_with(listener, store.clone(), options, async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            store,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Sends a request with a token; returns status, headers and JSON (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, headers, json)
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, _, v) = self.call(method, path, Some(ADMIN), body, &[]).await;
        (s, v)
    }

    /// Creates a token and returns it.
    pub async fn token(&self, name: &str, scope: &str, env: Option<&str>) -> String {
        let (s, v) = self
            .admin(
                Method::POST,
                "/api/v1/tokens",
                Some(serde_json::json!({"name": name, "scope": scope, "environment": env})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().expect("token").to_owned()
    }

    /// Stops the server and waits until it has shut down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// A minimal SSE client over reqwest's byte stream (comments and heartbeats skipped).
pub struct SseClient {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseClient {
    /// Opens `path` (with its query) without a token, as a browser's `EventSource` does.
    pub async fn open(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut req = server.http.get(format!("{}{path}", server.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("stream request");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
        Self { stream: Box::pin(resp.bytes_stream()), buffer: String::new() }
    }

    /// Whether the stream ends (the server closed it) within `secs` seconds; what is still
    /// buffered or arrives before the end is dropped. False on a timeout.
    pub async fn ends_within(&mut self, secs: u64) -> bool {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(Err(_))) => return false,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub async fn connect(server: &TestServer, token: &str, last_event_id: Option<&str>) -> Self {
        let mut req = server.http.get(format!("{}/api/v1/sdk/stream", server.base)).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("stream request");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
        Self { stream: Box::pin(resp.bytes_stream()), buffer: String::new() }
    }

    /// The next event, waiting at most `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> Option<SseEvent> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { event: "message".into(), id: None, data: String::new() };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??.ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// The workspace's root (examples and their `node_modules` live there).
pub fn workspace() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `node` and one example's npm packages, for the tests that run an example as a real process.
pub struct NodeComponents {
    pub node: std::path::PathBuf,
    pub node_modules: std::path::PathBuf,
}

/// One Node example's needs, as [`node_components`] looks them up.
pub struct NodeExample<'a> {
    /// What the skip banner calls the test ("the Node OFREP provider test").
    pub test: &'a str,
    /// The example's folder under `examples/` (`node-ofrep`).
    pub example: &'a str,
    /// The variable that overrides where its packages are (`DIMMER_NODE_OFREP_MODULES`).
    pub modules_var: &'a str,
    /// A file that is there once `npm ci` has run (`@openfeature/ofrep-provider/package.json`).
    pub probe: &'a str,
}

/// `node` (`DIMMER_NODE`, else the `PATH`) and the example's packages (`modules_var`, else
/// `examples/<example>/node_modules`), or `None` outside CI when one is missing: a loud warning
/// there, a failure in CI (`CI` set), where `.ci/run` installs them.
pub fn node_components(needs: &NodeExample<'_>) -> Option<NodeComponents> {
    let node = std::env::var_os("DIMMER_NODE").map(std::path::PathBuf::from).or_else(|| on_path("node"));
    let node_modules = std::env::var_os(needs.modules_var)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("examples").join(needs.example).join("node_modules"));
    let mut missing = Vec::new();
    if node.as_ref().is_none_or(|n| !n.is_file()) {
        missing.push("node (DIMMER_NODE, or node on the PATH; apt-get install nodejs)".to_owned());
    }
    if !node_modules.join(needs.probe).is_file() {
        missing.push(format!(
            "the example's packages in {} ({}; npm ci --ignore-scripts in examples/{})",
            node_modules.display(),
            needs.modules_var,
            needs.example
        ));
    }
    if let (Some(node), true) = (node, missing.is_empty()) {
        return Some(NodeComponents { node, node_modules });
    }
    let message = format!("{} needs: {}", needs.test, missing.join("; "));
    let in_ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    if in_ci {
        panic!("{message} (.ci/run installs them)");
    }
    // Straight to the terminal: the harness captures the output of tests that pass.
    let banner = "!".repeat(88);
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!(
            "\n{banner}\n!!! SKIPPED {}: {message}\n\
             !!! Run .ci/run (or install them) to run it; in CI this is a failure.\n{banner}\n",
            needs.test
        ),
    );
    None
}

fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

//! The Rust SDK against the real `dimmer serve` process: a change streamed into the client; the
//! server killed with SIGKILL and restarted while the client keeps serving, then resumes; a cold
//! start with the server down served from the disk cache; metric batches arriving and counted;
//! the OpenFeature provider answering through the OpenFeature client API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dimmer_sdk::openfeature::{DimmerProvider, ProviderEvent};
use dimmer_sdk::{Client, Context, Reason, Source};
use serde_json::Value;

const FLAG: &str = "checkout";

/// A `dimmer serve` process on a data directory.
struct Server {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Server {
    /// Starts on `listen` (`127.0.0.1:0` for any port); a first start saves the admin token.
    fn start(dir: &Path, listen: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dimmer"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(dir)
            // These tests switch flags on in production by hand: a policy file with no rule.
            .arg("--policy")
            .arg(crate::serve::permissive_policy(dir))
            .env_remove("DIMMER_ADMIN_TOKEN")
            .env_remove("DIMMER_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dimmer serve starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a first line").expect("readable");
        let base = first.split_whitespace().find(|w| w.starts_with("http://")).expect("an address").to_owned();
        let saved = dir.join(".admin-token");
        if !saved.exists() {
            let line = lines.next().expect("a token line").expect("readable");
            std::fs::write(&saved, line.rsplit(' ').next().expect("token")).expect("save token");
        }
        std::thread::spawn(move || for _ in lines {});
        Server { child, base, dir: dir.to_owned() }
    }

    fn admin(&self) -> String {
        std::fs::read_to_string(self.dir.join(".admin-token")).expect("saved token")
    }

    /// Runs a client verb with the admin token; its standard output.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_dimmer"))
            .args(["--server", &self.base, "--token", &self.admin()])
            .args(args)
            .output()
            .expect("dimmer runs");
        assert!(out.status.success(), "dimmer {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates the flag, turns it on in production, and returns a new sdk token.
    fn set_up(&self) -> String {
        self.run(&["flag", "create", FLAG, "--owner", "team-pay"]);
        self.toggle(true);
        let out = self.run(&["--json", "token", "create", "sdk-test", "--scope", "sdk", "--env", "production"]);
        let token: Value = serde_json::from_str(&out).expect("json");
        token["token"].as_str().expect("token").to_owned()
    }

    fn toggle(&self, on: bool) {
        let state = if on { "on" } else { "off" };
        self.run(&["toggle", FLAG, "--env", "production", state, "--reason", "sdk test"]);
    }

    fn port(&self) -> &str {
        self.base.rsplit(':').next().expect("a port")
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown path runs, the stream just breaks.
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("dimmer-sdk-{}-{name}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Waits until `check` holds, at most 20 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client(server: &Server, token: &str) -> dimmer_sdk::ClientBuilder {
    Client::builder(&server.base, token)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .metrics_flush_interval(Duration::from_secs(3600))
}

fn user() -> Context {
    Context::with_key("user-42")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_a_change_is_streamed_into_the_client() {
    let server = Server::start(&scratch("stream"), "127.0.0.1:0");
    let token = server.set_up();
    let client = client(&server, &token).build().expect("client");
    client.wait_ready(Duration::from_secs(20)).await.expect("ready");
    assert!(client.bool_value(FLAG, &user(), false));
    let mut changes = client.subscribe();

    eventually("the stream", || client.status().connected).await;
    server.toggle(false);
    let change = tokio::time::timeout(Duration::from_secs(20), changes.recv()).await.expect("a change").expect("event");
    assert_eq!(change.flags_changed, [FLAG]);
    let d = client.bool_details(FLAG, &user(), true);
    assert_eq!((d.value, d.reason, d.variant.as_deref()), (false, Reason::Disabled, Some("off")), "{change:?} {d:?}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_keeps_serving_through_kill_9_and_restart_then_resumes() {
    let dir = scratch("restart");
    let server = Server::start(&dir, "127.0.0.1:0");
    let token = server.set_up();
    let client = client(&server, &token).build().expect("client");
    client.wait_ready(Duration::from_secs(20)).await.expect("ready");
    eventually("the stream", || client.status().connected).await;
    let port = server.port().to_owned();

    server.kill();
    eventually("the client notices", || !client.status().connected).await;
    for _ in 0..100 {
        assert!(client.bool_value(FLAG, &user(), false), "served while the server is away");
    }

    let server = Server::start(&dir, &format!("127.0.0.1:{port}"));
    eventually("the client reconnects", || client.status().connected).await;
    server.toggle(false);
    eventually("the later change", || !client.bool_value(FLAG, &user(), true)).await;
    assert_eq!(client.status().source, Source::Server);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_cold_start_with_the_server_down_serves_the_disk_cache() {
    let dir = scratch("cold");
    let cache = dir.join("cache").join("flags.json");
    let server = Server::start(&dir, "127.0.0.1:0");
    let token = server.set_up();
    let base = server.base.clone();
    let first = client(&server, &token).cache_path(&cache).build().expect("client");
    first.wait_ready(Duration::from_secs(20)).await.expect("ready");
    eventually("the cache file", || cache.exists()).await;
    first.close().await;
    server.kill();

    // A new process, as it were: the server is down, only the cache is there.
    let cold = Client::builder(&base, &token).cache_path(&cache).build().expect("client");
    assert_eq!(cold.status().source, Source::Cache);
    let d = cold.bool_details(FLAG, &user(), false);
    assert_eq!((d.value, d.variant.as_deref()), (true, Some("on")));
    let err = cold.wait_ready(Duration::from_millis(300)).await.expect_err("the server is down");
    assert!(matches!(err, dimmer_sdk::Error::NotReady { serving: Source::Cache, .. }), "{err}");
    assert!(cold.bool_value(FLAG, &user(), false));
    cold.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metric_batches_arrive_and_are_counted() {
    let server = Server::start(&scratch("metrics"), "127.0.0.1:0");
    let token = server.set_up();
    let client = client(&server, &token).build().expect("client");
    client.wait_ready(Duration::from_secs(20)).await.expect("ready");
    for _ in 0..7 {
        assert!(client.bool_value(FLAG, &user(), false));
    }
    let d = client.bool_details(FLAG, &user(), false);
    for i in 0..5 {
        let timer = client.start_timer(&d);
        if i == 0 { timer.error() } else { timer.success() }
    }
    client.track(&d, "conversion", Some(10.0));
    client.close().await; // flushes
    let stats = client.metrics_stats();
    assert_eq!((stats.batches_sent, stats.dropped), (1, 0), "{stats:?}");

    let http = reqwest::Client::new();
    let view: Value = http
        .get(format!("{}/api/v1/flags/{FLAG}/metrics?env=production&window=1h", server.base))
        .bearer_auth(server.admin())
        .send()
        .await
        .expect("view")
        .json()
        .await
        .expect("json");
    let on = view["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["variant"] == "on"))
        .unwrap_or_else(|| panic!("no \"on\" variant in {view}"));
    assert_eq!(
        (on["evaluations"].as_u64(), on["successes"].as_u64(), on["errors"].as_u64()),
        (Some(8), Some(4), Some(1)),
        "{view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_openfeature_provider_answers_through_the_openfeature_client() {
    let server = Server::start(&scratch("openfeature"), "127.0.0.1:0");
    let token = server.set_up();
    let client = client(&server, &token).build().expect("client");
    client.wait_ready(Duration::from_secs(20)).await.expect("ready");
    eventually("the stream", || client.status().connected).await;
    let provider = DimmerProvider::new(client.clone());
    let mut events = provider.events();
    let of = {
        let mut api = open_feature::OpenFeature::singleton_mut().await;
        api.set_named_provider("dimmer-sdk-test", provider).await;
        api.create_named_client("dimmer-sdk-test")
    };
    let ctx = open_feature::EvaluationContext::default().with_targeting_key("user-42");
    let d = of.get_bool_details(FLAG, Some(&ctx), None).await.expect("resolved");
    assert_eq!((d.value, d.variant.as_deref()), (true, Some("on")));
    assert_eq!(d.reason, Some(open_feature::EvaluationReason::Static));
    assert_eq!(
        d.flag_metadata.values.get("environment"),
        Some(&open_feature::FlagMetadataValue::String("production".into()))
    );
    let missing = of.get_bool_details("no-such-flag", Some(&ctx), None).await.expect_err("not found");
    assert_eq!(missing.code, open_feature::EvaluationErrorCode::FlagNotFound);

    server.toggle(false);
    let event = tokio::time::timeout(Duration::from_secs(20), events.recv()).await.expect("an event").expect("event");
    assert_eq!(event, ProviderEvent::ConfigurationChanged { flags_changed: vec![FLAG.to_owned()] });
    let d = of.get_bool_details(FLAG, Some(&ctx), None).await.expect("resolved");
    assert_eq!((d.value, d.reason), (false, Some(open_feature::EvaluationReason::Disabled)));
    client.close().await;
}

//! Server configuration, layered once at start: defaults < file < environment < command line,
//! then validated into a typed value. Nothing else in the server reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::service::limits::{Rate, RateLimits};

/// The default time limit of a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The web origins whose pages may call the OFREP and SDK APIs (CORS); the admin API is never
/// open to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Every origin (`*`). Only safe when the tokens pages hold are `client` tokens: a page on any
    /// site could use an `sdk` token it got hold of to read rules, segments and user keys.
    Any,
    /// These origins (`scheme://host[:port]`, lowercase, without the scheme's default port);
    /// none by default, and then browsers refuse cross-origin calls.
    Only(Vec<String>),
}

impl Default for CorsOrigins {
    fn default() -> Self {
        CorsOrigins::Only(Vec::new())
    }
}

impl CorsOrigins {
    /// Parses the setting: `*` alone, or origins such as `https://app.example.com`.
    pub fn parse(entries: &[String]) -> Result<CorsOrigins, String> {
        if entries.iter().any(|e| e.trim() == "*") {
            if entries.len() > 1 {
                return Err("\"*\" allows every origin: list no others beside it".into());
            }
            return Ok(CorsOrigins::Any);
        }
        let mut origins = Vec::new();
        for entry in entries {
            let origin = crate::service::origins::normalize(entry.trim())?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(CorsOrigins::Only(origins))
    }

    /// Whether a page of `origin` (an `Origin` header, as browsers send it) may call.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            CorsOrigins::Any => true,
            CorsOrigins::Only(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// The validated configuration.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the SQLite database lives (when no database URL is given).
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL.
    pub database_url: Option<String>,
    /// An admin token to accept (bootstrap); never logged.
    pub admin_token: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Receivers of release events.
    pub webhooks: Vec<crate::service::webhooks::Target>,
    /// The flag policy enforced on writes (the recommended policy of docs/POLICY.md when no
    /// file is given).
    pub policy: crate::service::policy::ServerPolicy,
    /// How long a request may take (streams excepted); `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// Rate limits per token and per client address.
    pub rate_limits: RateLimits,
    /// Whether `/metrics` needs a token.
    pub metrics_token_required: bool,
    /// The web origins allowed to call the OFREP and SDK APIs from a browser.
    pub cors_origins: CorsOrigins,
    /// The span kinds whose spans are outcomes for OTLP ingest (OTLP's numbers).
    pub otlp_span_kinds: Vec<i32>,
    /// The Prometheus-compatible server `promql:` guards query.
    pub prometheus_url: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin token and database credentials are secrets: never printed.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("log_format", &self.log_format)
            // Webhook URLs often embed a secret (Slack's do): only their number is shown.
            .field("webhooks", &self.webhooks.len())
            .field("policy", &self.policy.source)
            .field("request_timeout", &self.request_timeout)
            .field("rate_limits", &self.rate_limits)
            .field("metrics_token_required", &self.metrics_token_required)
            .field("cors_origins", &self.cors_origins)
            .field("otlp_span_kinds", &self.otlp_span_kinds)
            .field("prometheus_url", &self.prometheus_url.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// One layer of settings; unset fields leave the layer below in place.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// `listen`.
    pub listen: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `database_url`.
    pub database_url: Option<String>,
    /// `admin_token`.
    pub admin_token: Option<String>,
    /// `log_format`.
    pub log_format: Option<String>,
    /// `webhooks`: URLs, each optionally prefixed with `slack=`.
    pub webhooks: Option<Vec<String>>,
    /// `policy`: a policy file (`dimmer-policy.yaml`).
    pub policy: Option<PathBuf>,
    /// `request_timeout`: `30s` (the default), or `off`.
    #[serde(default, deserialize_with = "text")]
    pub request_timeout: Option<String>,
    /// `rate_limit_token`: requests per second and burst per token, `1000/2000` (the default), or `off`.
    #[serde(default, deserialize_with = "text")]
    pub rate_limit_token: Option<String>,
    /// `rate_limit_address`: the same per client address, `2000/4000` (the default), or `off`.
    #[serde(default, deserialize_with = "text")]
    pub rate_limit_address: Option<String>,
    /// `metrics_token_required`: `true` to make `/metrics` need a token (default `false`).
    #[serde(default, deserialize_with = "text")]
    pub metrics_token_required: Option<String>,
    /// `cors_origins`: web origins allowed to call OFREP and the SDK API, or `["*"]`.
    pub cors_origins: Option<Vec<String>>,
    /// `otlp_span_kinds`: the span kinds that count as outcomes in OTLP ingest (`server`,
    /// `consumer` by default; also `internal`, `client`, `producer`).
    pub otlp_span_kinds: Option<Vec<String>>,
    /// `prometheus_url`: the Prometheus-compatible server `promql:` guards query
    /// (`http://prometheus:9090`).
    pub prometheus_url: Option<String>,
}

/// A setting as text, whether the file writes it as a string, a number or a boolean (the
/// environment has only text): validated, naming the setting, in [`load`].
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As for `Config`: the admin token, the database URL and webhook URLs are secrets.
        f.debug_struct("Layer")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("log_format", &self.log_format)
            .field("webhooks", &self.webhooks.as_ref().map(Vec::len))
            .field("policy", &self.policy)
            .field("request_timeout", &self.request_timeout)
            .field("rate_limit_token", &self.rate_limit_token)
            .field("rate_limit_address", &self.rate_limit_address)
            .field("metrics_token_required", &self.metrics_token_required)
            .field("cors_origins", &self.cors_origins)
            .field("otlp_span_kinds", &self.otlp_span_kinds)
            .field("prometheus_url", &self.prometheus_url.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Layer {
    fn over(self, base: Layer) -> Layer {
        Layer {
            listen: self.listen.or(base.listen),
            data_dir: self.data_dir.or(base.data_dir),
            database_url: self.database_url.or(base.database_url),
            admin_token: self.admin_token.or(base.admin_token),
            log_format: self.log_format.or(base.log_format),
            webhooks: self.webhooks.or(base.webhooks),
            policy: self.policy.or(base.policy),
            request_timeout: self.request_timeout.or(base.request_timeout),
            rate_limit_token: self.rate_limit_token.or(base.rate_limit_token),
            rate_limit_address: self.rate_limit_address.or(base.rate_limit_address),
            metrics_token_required: self.metrics_token_required.or(base.metrics_token_required),
            cors_origins: self.cors_origins.or(base.cors_origins),
            otlp_span_kinds: self.otlp_span_kinds.or(base.otlp_span_kinds),
            prometheus_url: self.prometheus_url.or(base.prometheus_url),
        }
    }

    /// The layer from environment variables (`DIMMER_LISTEN`, `DIMMER_DATA_DIR`,
    /// `DIMMER_DATABASE_URL`, `DIMMER_ADMIN_TOKEN`, `DIMMER_LOG_FORMAT`, `DIMMER_WEBHOOKS` and
    /// `DIMMER_CORS_ORIGINS` and `DIMMER_OTLP_SPAN_KINDS` as comma-separated lists, `DIMMER_POLICY`, `DIMMER_REQUEST_TIMEOUT`,
    /// `DIMMER_RATE_LIMIT_TOKEN`, `DIMMER_RATE_LIMIT_ADDRESS`, `DIMMER_METRICS_TOKEN_REQUIRED`, `DIMMER_PROMETHEUS_URL`),
    /// read through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Layer {
        Layer {
            listen: var("DIMMER_LISTEN"),
            data_dir: var("DIMMER_DATA_DIR").map(PathBuf::from),
            database_url: var("DIMMER_DATABASE_URL"),
            admin_token: var("DIMMER_ADMIN_TOKEN").filter(|t| !t.is_empty()),
            log_format: var("DIMMER_LOG_FORMAT"),
            webhooks: var("DIMMER_WEBHOOKS")
                .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()),
            policy: var("DIMMER_POLICY").filter(|p| !p.is_empty()).map(PathBuf::from),
            request_timeout: var("DIMMER_REQUEST_TIMEOUT").filter(|v| !v.is_empty()),
            rate_limit_token: var("DIMMER_RATE_LIMIT_TOKEN").filter(|v| !v.is_empty()),
            rate_limit_address: var("DIMMER_RATE_LIMIT_ADDRESS").filter(|v| !v.is_empty()),
            metrics_token_required: var("DIMMER_METRICS_TOKEN_REQUIRED").filter(|v| !v.is_empty()),
            cors_origins: var("DIMMER_CORS_ORIGINS")
                .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()),
            otlp_span_kinds: var("DIMMER_OTLP_SPAN_KINDS")
                .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()),
            prometheus_url: var("DIMMER_PROMETHEUS_URL").filter(|v| !v.is_empty()),
        }
    }
}

/// Why the configuration was refused; each names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting has a bad value.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting (`listen`, `database_url`, …).
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Builds the configuration: defaults < `file` < `env` < `flags`.
pub fn load(file: Option<&Path>, env: Layer, flags: Layer) -> Result<Config, ConfigError> {
    let from_file = match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            serde_json::from_str::<Layer>(&text)
                .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?
        }
        None => Layer::default(),
    };
    let merged = flags.over(env.over(from_file));
    let listen_text = merged.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listen = listen_text.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
        setting: "listen",
        message: format!("\"{listen_text}\" is not an address such as 127.0.0.1:8080 ({e})"),
    })?;
    let database_url = merged.database_url.filter(|u| !u.is_empty());
    if let Some(url) = &database_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Err(ConfigError::Invalid {
            setting: "database_url",
            message: "only postgres:// URLs are supported (leave it out for the embedded SQLite)".into(),
        });
    }
    let log_format = match merged.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::Invalid {
                setting: "log_format",
                message: format!("\"{other}\" is not text or json"),
            });
        }
    };
    if let Some(token) = &merged.admin_token
        && token.len() < 16
    {
        return Err(ConfigError::Invalid { setting: "admin_token", message: "must be at least 16 characters".into() });
    }
    let request_timeout = match merged.request_timeout.as_deref().map(str::trim) {
        None => Some(REQUEST_TIMEOUT),
        Some("off") => None,
        Some(text) => Some(
            dimmer_domain::duration::parse(text)
                .filter(|ms| *ms >= 1)
                .map(|ms| Duration::from_millis(ms.unsigned_abs()))
                .ok_or_else(|| ConfigError::Invalid {
                    setting: "request_timeout",
                    message: format!("\"{text}\" is not a duration such as 30s, or off"),
                })?,
        ),
    };
    let rate = |setting: &'static str, value: Option<&str>, default: Option<Rate>| match value.map(str::trim) {
        None => Ok(default),
        Some("off") => Ok(None),
        Some(text) => Rate::parse(text).map(Some).map_err(|message| ConfigError::Invalid { setting, message }),
    };
    let defaults = RateLimits::default();
    let rate_limits = RateLimits {
        per_token: rate("rate_limit_token", merged.rate_limit_token.as_deref(), defaults.per_token)?,
        per_address: rate("rate_limit_address", merged.rate_limit_address.as_deref(), defaults.per_address)?,
    };
    let metrics_token_required = match merged.metrics_token_required.as_deref().map(str::trim) {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => {
            return Err(ConfigError::Invalid {
                setting: "metrics_token_required",
                message: format!("\"{other}\" is not true or false"),
            });
        }
    };
    let webhooks = merged
        .webhooks
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, w)| crate::service::webhooks::Target::parse(w).map_err(|e| format!("entry {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| ConfigError::Invalid { setting: "webhooks", message })?;
    // Read and validated once, here: a bad policy file is a startup error naming its field.
    let policy = match &merged.policy {
        Some(path) => {
            crate::service::policy::load(path).map_err(|message| ConfigError::Invalid { setting: "policy", message })?
        }
        // No file: the policy docs/POLICY.md recommends, so a newcomer sees it at work on the
        // first flag; a file (even an empty one) replaces it whole.
        None => crate::service::policy::ServerPolicy::recommended(),
    };
    let cors_origins = CorsOrigins::parse(&merged.cors_origins.unwrap_or_default())
        .map_err(|message| ConfigError::Invalid { setting: "cors_origins", message })?;
    let otlp_span_kinds = match merged.otlp_span_kinds {
        None => vec![dimmer_protocol::otlp::kind::SERVER, dimmer_protocol::otlp::kind::CONSUMER],
        Some(names) if names.is_empty() => {
            return Err(ConfigError::Invalid {
                setting: "otlp_span_kinds",
                message: "name at least one span kind".into(),
            });
        }
        Some(names) => names
            .iter()
            .map(|n| {
                dimmer_protocol::otlp::kind::parse(n).ok_or_else(|| ConfigError::Invalid {
                    setting: "otlp_span_kinds",
                    message: format!("{n:?} is not internal, server, client, producer or consumer"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let prometheus_url = match merged.prometheus_url {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            return Err(ConfigError::Invalid {
                setting: "prometheus_url",
                message: "an http:// or https:// URL, such as http://prometheus:9090".into(),
            });
        }
        other => other,
    };
    Ok(Config {
        listen,
        otlp_span_kinds,
        prometheus_url,
        webhooks,
        policy,
        cors_origins,
        data_dir: merged.data_dir.unwrap_or_else(|| PathBuf::from("dimmer-data")),
        database_url,
        admin_token: merged.admin_token,
        log_format,
        request_timeout,
        rate_limits,
        metrics_token_required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_bad_values_name_the_setting() {
        let env = Layer { listen: Some("0.0.0.0:9000".into()), ..Layer::default() };
        let flags = Layer { listen: Some("127.0.0.1:0".into()), ..Layer::default() };
        let c = load(None, env.clone(), flags).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        let c = load(None, env, Layer::default()).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        let bad = Layer { listen: Some("nowhere".into()), ..Layer::default() };
        assert!(load(None, bad, Layer::default()).unwrap_err().to_string().starts_with("listen:"));
        let bad = Layer { database_url: Some("mysql://x".into()), ..Layer::default() };
        assert!(load(None, bad, Layer::default()).unwrap_err().to_string().starts_with("database_url:"));
        let secret = Layer { admin_token: Some("a-very-secret-admin-token".into()), ..Layer::default() };
        let c = load(None, secret, Layer::default()).unwrap();
        assert!(!format!("{c:?}").contains("very-secret"));
        let hooks = Layer::from_env(|n| {
            (n == "DIMMER_WEBHOOKS").then(|| "http://a/x-secret, slack=https://h/services/T/B/s3cret".to_owned())
        });
        let hooks_layer = hooks.clone();
        let c = load(None, hooks, Layer::default()).unwrap();
        assert_eq!(c.webhooks.len(), 2);
        // Webhook URLs are secrets: neither the configuration nor its targets print them.
        let printed = format!("{c:?} {:?} {hooks_layer:?}", c.webhooks);
        assert!(!printed.contains("secret") && !printed.contains("s3cret"), "{printed}");
        let bad = Layer { webhooks: Some(vec!["mailto:x-secret".into()]), ..Layer::default() };
        let e = load(None, bad, Layer::default()).unwrap_err().to_string();
        assert!(e.starts_with("webhooks:") && !e.contains("x-secret"), "{e}");
    }

    #[test]
    fn bounds_have_generous_defaults_can_be_turned_off_and_bad_values_name_the_setting() {
        let c = load(None, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.request_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.rate_limits, RateLimits::default());
        assert!(!c.metrics_token_required);
        let env = Layer::from_env(|n| match n {
            "DIMMER_REQUEST_TIMEOUT" => Some("5s".into()),
            "DIMMER_RATE_LIMIT_TOKEN" => Some("10/20".into()),
            "DIMMER_RATE_LIMIT_ADDRESS" => Some("off".into()),
            "DIMMER_METRICS_TOKEN_REQUIRED" => Some("true".into()),
            _ => None,
        });
        let c = load(None, env, Layer::default()).unwrap();
        assert_eq!(c.request_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.rate_limits.per_token, Some(Rate { per_second: 10.0, burst: 20.0 }));
        assert_eq!(c.rate_limits.per_address, None);
        assert!(c.metrics_token_required);
        let off = Layer { request_timeout: Some("off".into()), ..Layer::default() };
        assert_eq!(load(None, off, Layer::default()).unwrap().request_timeout, None);
        for (layer, setting) in [
            (Layer { request_timeout: Some("soon".into()), ..Layer::default() }, "request_timeout:"),
            (Layer { rate_limit_token: Some("lots".into()), ..Layer::default() }, "rate_limit_token:"),
            (Layer { rate_limit_address: Some("5/0".into()), ..Layer::default() }, "rate_limit_address:"),
            (Layer { metrics_token_required: Some("maybe".into()), ..Layer::default() }, "metrics_token_required:"),
        ] {
            assert!(load(None, layer, Layer::default()).unwrap_err().to_string().starts_with(setting));
        }
        // In a file, numbers and booleans are as good as text.
        let dir = std::env::temp_dir().join(format!("dimmer-config-bounds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(&file, r#"{"metrics_token_required": true, "rate_limit_token": 25, "request_timeout": "1m"}"#)
            .unwrap();
        let c = load(Some(&file), Layer::default(), Layer::default()).unwrap();
        assert!(c.metrics_token_required);
        assert_eq!(c.rate_limits.per_token, Some(Rate { per_second: 25.0, burst: 50.0 }));
        assert_eq!(c.request_timeout, Some(Duration::from_secs(60)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn otlp_span_kinds_are_named_and_checked() {
        let c = load(None, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.otlp_span_kinds, vec![2, 5]);
        let env = Layer::from_env(|k| (k == "DIMMER_OTLP_SPAN_KINDS").then(|| "server, client".to_owned()));
        assert_eq!(load(None, env, Layer::default()).unwrap().otlp_span_kinds, vec![2, 3]);
        let bad = Layer { otlp_span_kinds: Some(vec!["servers".into()]), ..Layer::default() };
        let err = load(None, bad, Layer::default()).unwrap_err().to_string();
        assert!(err.contains("otlp_span_kinds"), "{err}");
    }

    #[test]
    fn cors_origins_layer_like_the_others_and_are_normalized() {
        let file = std::env::temp_dir().join(format!("dimmer-config-cors-{}.json", std::process::id()));
        std::fs::write(&file, r#"{"cors_origins": ["https://file.example"]}"#).unwrap();
        let c = load(Some(&file), Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.cors_origins, CorsOrigins::Only(vec!["https://file.example".into()]));
        let env = Layer::from_env(|n| {
            (n == "DIMMER_CORS_ORIGINS").then(|| "HTTPS://App.Example.com:443, http://127.0.0.1:5173".to_owned())
        });
        let c = load(Some(&file), env.clone(), Layer::default()).unwrap();
        let expected = vec!["https://app.example.com".to_owned(), "http://127.0.0.1:5173".to_owned()];
        assert_eq!(c.cors_origins, CorsOrigins::Only(expected));
        assert!(c.cors_origins.allows("http://127.0.0.1:5173") && !c.cors_origins.allows("http://127.0.0.1:5174"));
        let flags = Layer { cors_origins: Some(vec!["*".into()]), ..Layer::default() };
        let c = load(Some(&file), env, flags).unwrap();
        assert_eq!(c.cors_origins, CorsOrigins::Any);
        assert!(c.cors_origins.allows("https://anywhere.example"));
        assert_eq!(load(None, Layer::default(), Layer::default()).unwrap().cors_origins, CorsOrigins::default());
        assert!(!CorsOrigins::default().allows("https://app.example.com"));
        for bad in [vec!["app.example.com"], vec!["https://app.example.com/"], vec!["ftp://x"], vec!["*", "https://a"]]
        {
            let flags = Layer { cors_origins: Some(bad.iter().map(|s| (*s).to_owned()).collect()), ..Layer::default() };
            let e = load(None, Layer::default(), flags).unwrap_err().to_string();
            assert!(e.starts_with("cors_origins:"), "{bad:?}: {e}");
        }
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn a_policy_file_is_loaded_once_and_a_bad_one_names_the_setting_and_the_field() {
        let dir = std::env::temp_dir().join(format!("dimmer-config-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(&good, "required: [owner]\n").unwrap();
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "naming:\n  pattern: \"([a-z\"\n").unwrap();
        let env = Layer::from_env(|n| (n == "DIMMER_POLICY").then(|| good.display().to_string()));
        let c = load(None, env, Layer::default()).unwrap();
        assert_eq!(c.policy.source.as_deref(), Some(good.as_path()));
        let flags = Layer { policy: Some(bad), ..Layer::default() };
        let e = load(None, Layer::default(), flags).unwrap_err().to_string();
        assert!(e.starts_with("policy:") && e.contains("naming.pattern"), "{e}");
        let default = load(None, Layer::default(), Layer::default()).unwrap().policy;
        assert!(default.source.is_none());
        assert_eq!(default, crate::service::policy::ServerPolicy::recommended(), "no file: the recommended policy");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

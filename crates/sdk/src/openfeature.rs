//! An OpenFeature provider (`open-feature` 0.3) backed by a [`Client`]: typed resolution with
//! reasons, variants, error codes and flag metadata, all evaluated locally.
//!
//! `open-feature` 0.3 has no provider-event API, so configuration changes are offered as
//! [`ProviderEvent`]s on [`DimmerProvider::events`]; the provider's [`status`] follows the client
//! (`NotReady` with nothing to serve, `Ready` when the server or a bootstrap answers, `STALE`
//! while serving the disk cache or cut off from the server).
//!
//! [`status`]: FeatureProvider::status

use async_trait::async_trait;
use dimmer_engine::{Context, Reason};
use open_feature::provider::{FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, StructValue, Value as OfValue,
};
use serde_json::{Map, Number, Value};
use tokio::sync::broadcast;

use crate::client::{Client, Details};
use crate::error::ErrorCode;
use crate::shared::ChangeEvent;
use crate::state::Source;

/// What the provider tells its listeners (OpenFeature's provider events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEvent {
    /// The configuration changed; these flags may answer differently.
    ConfigurationChanged {
        /// The flags whose answers may have changed.
        flags_changed: Vec<String>,
    },
}

/// The Dimmer provider.
#[derive(Debug)]
pub struct DimmerProvider {
    client: Client,
    metadata: ProviderMetadata,
    events: broadcast::Sender<ProviderEvent>,
}

impl DimmerProvider {
    /// A provider answering from `client`.
    pub fn new(client: Client) -> DimmerProvider {
        let (events, _) = broadcast::channel(64);
        let sender = events.clone();
        client.on_change(move |change: &ChangeEvent| {
            let _ = sender.send(ProviderEvent::ConfigurationChanged { flags_changed: change.flags_changed.clone() });
        });
        DimmerProvider { client, metadata: ProviderMetadata::new("dimmer"), events }
    }

    /// Provider events (bounded: a receiver that falls behind skips events and is told so).
    pub fn events(&self) -> broadcast::Receiver<ProviderEvent> {
        self.events.subscribe()
    }

    /// The client behind the provider (for outcome metrics).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// OpenFeature's context as the engine's: the targeting key plus every field (date-times as
/// RFC 3339 strings; opaque structs cannot be read and are left out).
pub fn to_context(context: &EvaluationContext) -> Context {
    let mut map = Map::new();
    for (name, field) in &context.custom_fields {
        let value = match field {
            EvaluationContextFieldValue::Bool(b) => Value::Bool(*b),
            EvaluationContextFieldValue::Int(i) => Value::from(*i),
            EvaluationContextFieldValue::Float(f) => Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            EvaluationContextFieldValue::String(s) => Value::String(s.clone()),
            EvaluationContextFieldValue::DateTime(t) => {
                match t.format(&time::format_description::well_known::Rfc3339) {
                    Ok(s) => Value::String(s),
                    Err(_) => continue,
                }
            }
            EvaluationContextFieldValue::Struct(_) => continue,
        };
        map.insert(name.clone(), value);
    }
    if let Some(key) = &context.targeting_key {
        map.insert(dimmer_engine::context::TARGETING_KEY.to_owned(), Value::String(key.clone()));
    }
    Context::from_map(map)
}

fn reason(reason: Reason) -> EvaluationReason {
    match reason {
        Reason::Static => EvaluationReason::Static,
        Reason::TargetingMatch => EvaluationReason::TargetingMatch,
        Reason::Split => EvaluationReason::Split,
        Reason::Default => EvaluationReason::Default,
        Reason::Disabled => EvaluationReason::Disabled,
        // OpenFeature has no such reason; OFREP answers DISABLED for it too.
        Reason::PrerequisiteFailed => EvaluationReason::Disabled,
        Reason::Error => EvaluationReason::Error,
    }
}

fn error_code(code: ErrorCode) -> EvaluationErrorCode {
    match code {
        ErrorCode::ProviderNotReady => EvaluationErrorCode::ProviderNotReady,
        ErrorCode::FlagNotFound => EvaluationErrorCode::FlagNotFound,
        ErrorCode::TypeMismatch => EvaluationErrorCode::TypeMismatch,
        ErrorCode::ParseError => EvaluationErrorCode::ParseError,
        ErrorCode::TargetingKeyMissing => EvaluationErrorCode::TargetingKeyMissing,
        ErrorCode::InvalidContext => EvaluationErrorCode::InvalidContext,
        ErrorCode::General => EvaluationErrorCode::General("GENERAL".to_owned()),
    }
}

fn metadata<T>(details: &Details<T>) -> FlagMetadata {
    let mut m = FlagMetadata::default();
    if let Some(env) = &details.environment {
        m.add_value("environment", env.clone());
    }
    if let Some(revision) = details.revision {
        m.add_value("revision", revision);
    }
    if let Some(rule) = &details.rule_id {
        m.add_value("rule", rule.clone());
    }
    if let Some(info) = &details.flag_info {
        m.add_value("kind", info.kind.to_owned());
        if let Some(owner) = &info.owner {
            m.add_value("owner", owner.clone());
        }
    }
    if details.reason == Reason::PrerequisiteFailed {
        m.add_value("dimmerReason", "PREREQUISITE_FAILED".to_owned());
    }
    m
}

/// The SDK's details as OpenFeature's: an error, or a value with its reason, variant and
/// metadata. A served variant is the only success: a flag that is off and has no off variant
/// has nothing to serve, and OpenFeature 0.3 resolutions cannot carry "use the caller's
/// default", so it is a `GENERAL` error (as in OFREP).
fn resolution<T, U>(details: Details<Option<T>>, into: impl FnOnce(T) -> U) -> EvaluationResult<ResolutionDetails<U>> {
    if let Some(code) = details.error_code {
        return Err(EvaluationError {
            code: error_code(code),
            message: details.error_message.clone().or_else(|| Some(code.as_str().to_owned())),
        });
    }
    let flag_metadata = metadata(&details);
    let Some(value) = details.value else {
        return Err(EvaluationError {
            code: EvaluationErrorCode::General("GENERAL".to_owned()),
            message: Some(format!(
                "flag \"{}\" is {} and has no off variant to serve",
                details.flag_key,
                details.reason.as_str()
            )),
        });
    };
    Ok(ResolutionDetails {
        value: into(value),
        variant: details.variant,
        reason: Some(reason(details.reason)),
        flag_metadata: Some(flag_metadata),
    })
}

fn to_of_value(value: Value) -> OfValue {
    match value {
        Value::Null => OfValue::String(String::new()),
        Value::Bool(b) => OfValue::Bool(b),
        Value::Number(n) => n.as_i64().map(OfValue::Int).unwrap_or_else(|| OfValue::Float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => OfValue::String(s),
        Value::Array(items) => OfValue::Array(items.into_iter().map(to_of_value).collect()),
        Value::Object(fields) => OfValue::Struct(to_struct(fields)),
    }
}

fn to_struct(fields: Map<String, Value>) -> StructValue {
    StructValue { fields: fields.into_iter().map(|(k, v)| (k, to_of_value(v))).collect() }
}

impl DimmerProvider {
    /// Evaluates through the client; a value is `Some` only when a variant of the wanted type
    /// was served.
    fn details<T>(
        &self,
        key: &str,
        context: &EvaluationContext,
        convert: fn(&Value) -> Option<T>,
    ) -> Details<Option<T>> {
        self.client.details(key, &to_context(context), None, |v| convert(v).map(Some))
    }
}

#[async_trait]
impl FeatureProvider for DimmerProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        let status = self.client.status();
        match status.source {
            Source::Nothing => ProviderStatus::NotReady,
            Source::Cache => ProviderStatus::STALE,
            Source::Server if !status.connected => ProviderStatus::STALE,
            Source::Server | Source::Bootstrap => ProviderStatus::Ready,
        }
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        resolution(self.details(key, context, Value::as_bool), |v| v)
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        resolution(self.details(key, context, Value::as_i64), |v| v)
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        resolution(self.details(key, context, Value::as_f64), |v| v)
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        resolution(self.details(key, context, |v| v.as_str().map(str::to_owned)), |v| v)
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        resolution(self.details(key, context, |v| v.as_object().cloned()), to_struct)
    }
}

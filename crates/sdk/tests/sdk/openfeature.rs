//! The OpenFeature provider through the OpenFeature client API, scenario by scenario from
//! `tests/vectors/openfeature/evaluation_v2.feature` (the ones that apply to a provider).
//!
//! Not applicable, and why: "CACHED reason" (a local evaluation is never a cached answer);
//! "Provider in fatal state" (this provider has no fatal state: it serves defaults instead);
//! "Null context values" through OpenFeature (its Rust context has no null; covered through the
//! SDK's own context below); arbitrary flag metadata such as `"integer": 2` (Dimmer's flags
//! carry kind and owner, and the provider adds environment, revision and rule instead); hooks
//! and context immutability (the OpenFeature client's job, not the provider's).
//!
//! open-feature 0.3 takes no default value: an error comes back as `Err(code)` and the caller
//! applies its default (`unwrap_or`), which is what the scenarios' "the resolved details value
//! should be <default>" checks here.

use std::collections::HashMap;

use dimmer_sdk::openfeature::DimmerProvider;
use dimmer_sdk::{Client, Context, Reason};
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{
    EvaluationContext, EvaluationErrorCode, EvaluationReason, FlagMetadataValue, OpenFeature, StructValue,
};

use super::offline_client;

/// An OpenFeature client for a provider registered under a name of its own (tests share the
/// process-wide OpenFeature singleton).
async fn of_client(name: &str, client: Client) -> open_feature::Client {
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider(name, DimmerProvider::new(client)).await;
    api.create_named_client(name)
}

fn email(address: &str) -> EvaluationContext {
    EvaluationContext::default().with_custom_field("email", address)
}

fn pics() -> StructValue {
    StructValue::default()
        .with_field("showImages", true)
        .with_field("title", "Check out these pics!")
        .with_field("imagesPerPage", 100i64)
}

#[derive(Debug, Clone, PartialEq)]
enum Got {
    Bool(bool),
    Str(String),
    Int(i64),
    Float(f64),
    Object(StructValue),
}

#[derive(Debug)]
struct Answer {
    value: Result<Got, EvaluationErrorCode>,
    variant: Option<String>,
    reason: Option<EvaluationReason>,
}

/// Evaluates `key` as `kind` (the feature file's `<type>`) through the OpenFeature client.
async fn evaluate(client: &open_feature::Client, kind: &str, key: &str, ctx: &EvaluationContext) -> Answer {
    macro_rules! run {
        ($method:ident, $wrap:expr) => {
            match client.$method(key, Some(ctx), None).await {
                Ok(d) => Answer { value: Ok($wrap(d.value)), variant: d.variant, reason: d.reason },
                Err(e) => Answer { value: Err(e.code), variant: None, reason: None },
            }
        };
    }
    match kind {
        "Boolean" => run!(get_bool_details, Got::Bool),
        "String" => run!(get_string_details, Got::Str),
        "Integer" => run!(get_int_details, Got::Int),
        "Float" => run!(get_float_details, Got::Float),
        "Object" => {
            let r: open_feature::EvaluationResult<open_feature::EvaluationDetails<StructValue>> =
                client.get_struct_details(key, Some(ctx), None).await;
            match r {
                Ok(d) => Answer { value: Ok(Got::Object(d.value)), variant: d.variant, reason: d.reason },
                Err(e) => Answer { value: Err(e.code), variant: None, reason: None },
            }
        }
        other => panic!("unknown type {other}"),
    }
}

#[tokio::test]
async fn resolve_values_with_variants_and_static_reason() {
    let client = of_client("resolve", offline_client()).await;
    let table = [
        ("Boolean", "boolean-flag", Got::Bool(true), "on"),
        ("String", "string-flag", Got::Str("hi".into()), "greeting"),
        ("Integer", "integer-flag", Got::Int(10), "ten"),
        ("Float", "float-flag", Got::Float(0.5), "half"),
        ("Object", "object-flag", Got::Object(pics()), "template"),
    ];
    for (kind, key, value, variant) in table {
        let a = evaluate(&client, kind, key, &EvaluationContext::default()).await;
        assert_eq!(a.value, Ok(value), "{key}");
        assert_eq!(a.variant.as_deref(), Some(variant), "{key}");
        assert_eq!(a.reason, Some(EvaluationReason::Static), "{key}");
    }
}

#[tokio::test]
async fn zero_values_resolve_statically_and_by_targeting() {
    let client = of_client("zero", offline_client()).await;
    let zeros = [
        ("Boolean", Got::Bool(false)),
        ("String", Got::Str(String::new())),
        ("Integer", Got::Int(0)),
        ("Float", Got::Float(0.0)),
        ("Object", Got::Object(StructValue::default())),
    ];
    for (kind, zero) in zeros {
        let lower = kind.to_lowercase();
        let plain = format!("{lower}-zero-flag");
        let a = evaluate(&client, kind, &plain, &EvaluationContext::default()).await;
        assert_eq!((a.value, a.reason), (Ok(zero.clone()), Some(EvaluationReason::Static)), "{plain}");

        let targeted = format!("{lower}-targeted-zero-flag");
        let a = evaluate(&client, kind, &targeted, &email("ballmer@macrosoft.com")).await;
        assert_eq!((a.value, a.reason), (Ok(zero.clone()), Some(EvaluationReason::TargetingMatch)), "{targeted}");
        // "Resolves zero value with targeting using default" and "Empty evaluation context".
        for ctx in [email("ballmer@none.com"), EvaluationContext::default()] {
            let a = evaluate(&client, kind, &targeted, &ctx).await;
            assert_eq!((a.value, a.reason), (Ok(zero.clone()), Some(EvaluationReason::Default)), "{targeted}");
        }
    }
}

#[tokio::test]
async fn multiple_context_attributes_targeting() {
    let client = of_client("complex", offline_client()).await;
    let ctx = email("ballmer@macrosoft.com")
        .with_custom_field("role", "admin")
        .with_custom_field("age", 65i64)
        .with_custom_field("customer", false);
    let a = evaluate(&client, "String", "complex-targeted", &ctx).await;
    assert_eq!((a.value, a.reason), (Ok(Got::Str("INTERNAL".into())), Some(EvaluationReason::TargetingMatch)));
}

#[tokio::test]
async fn errors_flag_not_found_and_type_mismatch_leave_the_callers_default() {
    let client = of_client("errors", offline_client()).await;
    let ctx = EvaluationContext::default();
    for kind in ["Boolean", "String", "Integer", "Float", "Object"] {
        let a = evaluate(&client, kind, "non-existent-flag", &ctx).await;
        assert_eq!(a.value, Err(EvaluationErrorCode::FlagNotFound), "{kind}");
    }
    let mismatches = [
        ("Boolean", "string-flag"),
        ("String", "boolean-flag"),
        ("Integer", "boolean-flag"),
        ("Float", "boolean-flag"),
        ("Object", "boolean-flag"),
    ];
    for (kind, key) in mismatches {
        let a = evaluate(&client, kind, key, &ctx).await;
        assert_eq!(a.value, Err(EvaluationErrorCode::TypeMismatch), "{kind} {key}");
    }
    // The caller's default, as the OpenFeature 0.3 API has it.
    let value = client.get_bool_value("string-flag", None, None).await.unwrap_or(false);
    assert!(!value);
}

#[tokio::test]
async fn provider_not_ready_until_a_configuration_is_known() {
    let empty = Client::builder("http://127.0.0.1:9", "unused").offline(true).build().unwrap();
    let provider = DimmerProvider::new(empty.clone());
    assert_eq!(provider.status(), ProviderStatus::NotReady);
    let client = of_client("not-ready", empty).await;
    for kind in ["Boolean", "String", "Integer", "Float", "Object"] {
        let a = evaluate(&client, kind, "boolean-flag", &EvaluationContext::default()).await;
        assert_eq!(a.value, Err(EvaluationErrorCode::ProviderNotReady), "{kind}");
    }
    assert_eq!(DimmerProvider::new(offline_client()).status(), ProviderStatus::Ready);
}

#[tokio::test]
async fn disabled_flags_say_disabled() {
    let sdk = offline_client();
    // Through the SDK: the caller's default, reason DISABLED.
    let ctx = Context::new();
    let d = sdk.string_details("string-disabled-flag", &ctx, "bye");
    assert_eq!((d.value.as_str(), d.reason, d.error_code), ("bye", Reason::Disabled, None));
    assert_eq!(sdk.int_details("integer-disabled-flag", &ctx, 1).value, 1);
    assert_eq!(sdk.number_details("float-disabled-flag", &ctx, 0.1).value, 0.1);
    assert_eq!(sdk.json_details("object-disabled-flag", &ctx, serde_json::json!({"a": 1})).reason, Reason::Disabled);

    // Through OpenFeature: a flag with an off variant serves it with DISABLED; one without has
    // nothing to serve, so the caller's default applies.
    let client = of_client("disabled", sdk).await;
    let a = evaluate(&client, "Boolean", "boolean-disabled-flag", &EvaluationContext::default()).await;
    assert_eq!((a.value, a.reason), (Ok(Got::Bool(false)), Some(EvaluationReason::Disabled)));
    let value = client.get_int_value("integer-disabled-flag", None, None).await.unwrap_or(1);
    assert_eq!(value, 1);
}

#[tokio::test]
async fn complete_details_carry_key_variant_reason_and_metadata() {
    let client = of_client("details", offline_client()).await;
    let d = client.get_bool_details("metadata-flag", None, None).await.unwrap();
    assert_eq!((d.flag_key.as_str(), d.value, d.variant.as_deref()), ("metadata-flag", true, Some("on")));
    assert_eq!(d.reason, Some(EvaluationReason::Static));
    let expected: HashMap<String, FlagMetadataValue> = [
        ("environment", FlagMetadataValue::String("production".into())),
        ("revision", FlagMetadataValue::Int(0)),
        ("kind", FlagMetadataValue::String("operational".into())),
        ("owner", FlagMetadataValue::String("team-flags".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(d.flag_metadata.values, expected);

    let d = client
        .get_string_details("string-targeted-zero-flag", Some(&email("ballmer@macrosoft.com")), None)
        .await
        .unwrap();
    assert_eq!(d.flag_metadata.values.get("rule"), Some(&FlagMetadataValue::String("contract-rule".into())));
}

#[tokio::test]
async fn null_context_values_fall_back_to_the_default_rule() {
    // OpenFeature's Rust context cannot hold a null; the SDK's own context can.
    let sdk = offline_client();
    let mut ctx = Context::new();
    ctx.set("email", serde_json::Value::Null);
    let d = sdk.bool_details("boolean-targeted-zero-flag", &ctx, true);
    assert_eq!((d.value, d.reason), (false, Reason::Default));
}

//! Release plans, as pure decisions: ordered exposure stages, what a command does to a plan, and
//! whether a running plan should move on. No I/O and no clock of its own: time comes in as an
//! argument (a [`Clock`] at the edge), so a thin loop applies decisions and tests drive plans
//! through every stage without sleeping.

use serde::{Deserialize, Serialize};

use dimmer_engine::FlagKind;
use dimmer_engine::model::{EnvironmentConfig, Exposure, FULL_WEIGHT, Flag, OFF, ON, Rollout, Serve, WeightedVariant};

/// One stage: who is exposed, and for how long at least.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Segments exposed in full (internal users, beta customers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// The share of everyone else exposed, in 1/1000 of a percent (100000 = 100%).
    pub weight: u32,
    /// The minimum time in the stage before it may advance, in milliseconds.
    pub min_dwell_ms: i64,
}

/// Why a plan specification or command was refused. [`PlanError::field`] names the field it is
/// about, so that the API maps it to a field path by type, never by parsing the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A stage in a `--stages` list is neither a percentage nor a segment key.
    BadStage {
        /// Its position.
        index: usize,
        /// What was written.
        text: String,
    },
    /// Percentages must grow from stage to stage.
    Shrinking {
        /// Its position.
        index: usize,
        /// The offending percentage.
        percent: String,
    },
    /// A plan needs at least one stage.
    Empty,
    /// A duration such as `30m` did not parse.
    BadDuration(String),
    /// The command does not apply in the plan's status.
    NotAllowed {
        /// The status.
        status: Status,
        /// The command.
        command: &'static str,
    },
}

impl PlanError {
    /// The field the error is about (`stages[2]`, `stages`, `dwell`); `None` when it is about the
    /// plan's state rather than a field.
    pub fn field(&self) -> Option<String> {
        match self {
            PlanError::BadStage { index, .. } | PlanError::Shrinking { index, .. } => Some(format!("stages[{index}]")),
            PlanError::Empty => Some("stages".into()),
            PlanError::BadDuration(_) => Some("dwell".into()),
            PlanError::NotAllowed { .. } => None,
        }
    }

    /// What is wrong, without the field.
    pub fn reason(&self) -> String {
        match self {
            PlanError::BadStage { text, .. } => {
                format!("\"{text}\" is not a percentage (such as 5% or 0.5%) or a segment key")
            }
            PlanError::Shrinking { percent, .. } => {
                format!("{percent} is lower than the stage before it; stages only widen exposure")
            }
            PlanError::Empty => "a plan needs at least one stage".into(),
            PlanError::BadDuration(text) => format!("\"{text}\" is not a duration such as 90s, 30m, 2h or 1d"),
            PlanError::NotAllowed { status, command } => format!("the plan is {status:?}: cannot {command}"),
        }
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field() {
            Some(field) => write!(f, "{field}: {}", self.reason()),
            None => f.write_str(&self.reason()),
        }
    }
}

impl std::error::Error for PlanError {}

/// Parses a duration (see [`crate::duration::parse`]), or says which text was not one.
pub fn parse_duration(text: &str) -> Result<i64, PlanError> {
    crate::duration::parse(text).ok_or_else(|| PlanError::BadDuration(text.trim().to_owned()))
}

/// Parses a percentage such as `5%` or `0.125%` into weight (1/1000 of a percent).
fn parse_percent(text: &str) -> Option<u32> {
    let number = text.strip_suffix('%')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.len() > 3 || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let fraction: u32 = format!("{fraction:0<3}").parse().ok()?;
    let weight = whole.checked_mul(1000)?.checked_add(fraction)?;
    (weight <= FULL_WEIGHT).then_some(weight)
}

/// Parses `--stages "internal,1%,5%,25%,50%,100%"`: a segment key exposes that segment in full
/// (and keeps it exposed in later stages); a percentage exposes that share of everyone else.
/// Every stage gets `dwell_ms` as its minimum dwell unless it names its own (`5%@2h`).
pub fn parse_stages(spec: &str, dwell_ms: i64) -> Result<Vec<Stage>, PlanError> {
    let mut stages = Vec::new();
    let mut segments: Vec<String> = Vec::new();
    let mut weight = 0;
    for (index, item) in spec.split(',').map(str::trim).enumerate() {
        // `5%@2h`: this stage's own dwell.
        let (raw, min_dwell_ms) = match item.split_once('@') {
            Some((raw, dwell)) => (raw.trim(), parse_duration(dwell)?),
            None => (item, dwell_ms),
        };
        if raw.ends_with('%') {
            let w = parse_percent(raw).ok_or_else(|| PlanError::BadStage { index, text: raw.to_owned() })?;
            if w < weight {
                return Err(PlanError::Shrinking { index, percent: raw.to_owned() });
            }
            weight = w;
        } else if !raw.is_empty() && raw.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            if !segments.iter().any(|s| s == raw) {
                segments.push(raw.to_owned());
            }
        } else {
            return Err(PlanError::BadStage { index, text: raw.to_owned() });
        }
        stages.push(Stage { segments: segments.clone(), weight, min_dwell_ms });
    }
    if stages.is_empty() {
        return Err(PlanError::Empty);
    }
    Ok(stages)
}

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Moving on by itself once dwell and guards allow.
    Running,
    /// Held by a person or a dial-down; moves only when resumed.
    Paused,
    /// The last stage (full exposure) was reached: the flag is released.
    Released,
    /// Rolled back to no exposure; the plan is over.
    RolledBack,
}

impl Status {
    /// How the status is written (in the store, the API and the CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Released => "released",
            Status::RolledBack => "rolled-back",
        }
    }

    /// A status from its written form.
    pub fn parse(text: &str) -> Option<Status> {
        [Status::Running, Status::Paused, Status::Released, Status::RolledBack].into_iter().find(|s| s.as_str() == text)
    }
}

/// A plan's durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanState {
    /// The current stage's index.
    pub stage: usize,
    /// When the current stage began, Unix milliseconds.
    pub entered_at_ms: i64,
    /// Running, paused, released or rolled back.
    pub status: Status,
}

impl PlanState {
    /// A plan that starts now, in its first stage.
    pub fn start(now_ms: i64) -> Self {
        Self { stage: 0, entered_at_ms: now_ms, status: Status::Running }
    }
}

/// What the guards of the current stage say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No guard objects (or there are none).
    Healthy,
    /// Not enough data yet to say.
    Unknown,
    /// A guard saw a regression (its own action, such as a dial-down, is applied elsewhere).
    Unhealthy,
}

/// What a running plan should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing yet; `wait_ms` is how long at least until the dwell allows a move, if known.
    Stay {
        /// Why.
        reason: &'static str,
        /// Time left in the dwell, if that is the reason.
        wait_ms: Option<i64>,
    },
    /// Enter the next stage.
    Advance {
        /// Its index.
        to: usize,
    },
}

/// The pure progression decision: a running plan advances when the current stage's dwell has
/// passed and its guards are healthy; the last stage is never left.
pub fn decide(stages: &[Stage], state: &PlanState, now_ms: i64, health: Health) -> Decision {
    if state.status != Status::Running {
        return Decision::Stay { reason: "the plan is not running", wait_ms: None };
    }
    let Some(stage) = stages.get(state.stage) else {
        return Decision::Stay { reason: "the plan has no such stage", wait_ms: None };
    };
    if state.stage + 1 >= stages.len() {
        return Decision::Stay { reason: "the last stage is reached", wait_ms: None };
    }
    let waited = now_ms.saturating_sub(state.entered_at_ms);
    if waited < stage.min_dwell_ms {
        return Decision::Stay {
            reason: "the stage's minimum dwell has not passed",
            wait_ms: Some(stage.min_dwell_ms - waited),
        };
    }
    match health {
        Health::Healthy => Decision::Advance { to: state.stage + 1 },
        Health::Unknown => Decision::Stay { reason: "the guards do not have enough data yet", wait_ms: None },
        Health::Unhealthy => Decision::Stay { reason: "a guard reports a regression", wait_ms: None },
    }
}

/// A person's (or a dial-down's) command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Enter the next stage now, dwell or not.
    Advance,
    /// Hold the plan.
    Pause,
    /// Let a paused plan move on again (its dwell restarts).
    Resume,
    /// Go back one stage (and hold), or to no exposure at all (ending the plan).
    Rollback {
        /// Back to no exposure.
        to_zero: bool,
    },
}

/// Applies a command (or an automatic [`Decision::Advance`]) to a plan: pure, so that the loop
/// that persists it can be thin and a restart resumes exactly where the state says.
pub fn apply(stages: &[Stage], state: &PlanState, command: Command, now_ms: i64) -> Result<PlanState, PlanError> {
    let last = stages.len().saturating_sub(1);
    let enter = |stage: usize, status: Status| PlanState { stage, entered_at_ms: now_ms, status };
    match (command, state.status) {
        (_, Status::Released | Status::RolledBack) if command != (Command::Rollback { to_zero: true }) => {
            Err(PlanError::NotAllowed { status: state.status, command: command_name(command) })
        }
        (Command::Advance, _) => {
            let next = (state.stage + 1).min(last);
            Ok(enter(next, if next == last { Status::Released } else { state.status }))
        }
        (Command::Pause, _) => Ok(PlanState { status: Status::Paused, ..*state }),
        (Command::Resume, Status::Paused) => Ok(enter(state.stage, Status::Running)),
        (Command::Resume, status) => Err(PlanError::NotAllowed { status, command: "resume" }),
        (Command::Rollback { to_zero: true }, _) => Ok(enter(0, Status::RolledBack)),
        (Command::Rollback { to_zero: false }, _) => Ok(enter(state.stage.saturating_sub(1), Status::Paused)),
    }
}

fn command_name(command: Command) -> &'static str {
    match command {
        Command::Advance => "advance",
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::Rollback { .. } => "roll back",
    }
}

/// A release plan on one flag in one environment: its stages and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The stages, in order; the last is normally full exposure.
    pub stages: Vec<Stage>,
    /// The template it was made from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Guards watching every stage: a stage advances only when they are healthy, and a
    /// regression applies the guard's action at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<crate::guard::Guard>,
}

/// A named plan kept on the server, offered by `plan start --template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Its name.
    pub name: String,
    /// What it is for, for people.
    #[serde(default)]
    pub description: String,
    /// The stages.
    pub stages: Vec<Stage>,
    /// The flag kinds for which it is the default template.
    #[serde(default)]
    pub default_for: Vec<FlagKind>,
}

/// The templates every server has; a stored template of the same name replaces one.
pub fn builtin_templates() -> Vec<Template> {
    const MIN: i64 = 60_000;
    let make = |name: &str, description: &str, spec: &str, dwell: i64, default_for: &[FlagKind]| Template {
        name: name.to_owned(),
        description: description.to_owned(),
        // The specs below are constants that parse (a unit test holds them to it).
        stages: parse_stages(spec, dwell).unwrap_or_default(),
        default_for: default_for.to_vec(),
    };
    vec![
        make(
            "standard",
            "Internal users first, then 1%, 5%, 25%, 50% and everyone, an hour at least in each stage.",
            "internal,1%,5%,25%,50%,100%",
            60 * MIN,
            &[FlagKind::Release, FlagKind::Experiment],
        ),
        make(
            "careful",
            "For risky changes and permanent switches: internal users for a day, then 0.1% up to everyone, \
             four hours at least in each stage.",
            "internal@1d,0.1%,1%,5%,10%,25%,50%,100%",
            4 * 60 * MIN,
            &[FlagKind::KillSwitch, FlagKind::Permission],
        ),
        make(
            "quick",
            "For operational switches: internal users, 10%, 50% and everyone, ten minutes in each stage.",
            "internal,10%,50%,100%",
            10 * MIN,
            &[FlagKind::Operational],
        ),
    ]
}

/// `5%`, `0.125%`: a weight as people write it.
pub fn percent_text(weight: u32) -> String {
    let (whole, fraction) = (weight / 1000, weight % 1000);
    if fraction == 0 {
        format!("{whole}%")
    } else {
        format!("{whole}.{}%", format!("{fraction:03}").trim_end_matches('0'))
    }
}

/// A weight as a number of percent (`5_000` → `5.0`), for JSON and metrics.
pub fn weight_percent(weight: u32) -> f64 {
    f64::from(weight) / 1000.0
}

/// The exposure ceiling of an environment, in weight: 0 when it is off, full when it has none.
pub fn exposure_weight(cfg: Option<&EnvironmentConfig>) -> u32 {
    match cfg {
        Some(cfg) if cfg.enabled => ceiling_weight(cfg.exposure.as_ref()),
        _ => 0,
    }
}

/// An exposure's ceiling in 1/1000 of a percent, whatever its own total; full when there is none.
fn ceiling_weight(exposure: Option<&Exposure>) -> u32 {
    exposure.map_or(FULL_WEIGHT, |e| {
        let total = u64::from(e.total.unwrap_or(FULL_WEIGHT).max(1));
        u32::try_from(u64::from(e.weight) * u64::from(FULL_WEIGHT) / total).unwrap_or(FULL_WEIGHT)
    })
}

/// The exposure for `stage`, keeping the bucketing of the exposure it replaces (so users keep
/// their buckets); `None` at full exposure, where the ceiling has no effect.
pub fn stage_exposure(stage: &Stage, previous: Option<&Exposure>) -> Option<Exposure> {
    if stage.weight >= FULL_WEIGHT {
        return None;
    }
    let base = previous.cloned().unwrap_or_default();
    let weight = match base.total {
        Some(total) if total != FULL_WEIGHT => {
            u32::try_from(u64::from(stage.weight) * u64::from(total) / u64::from(FULL_WEIGHT)).unwrap_or(total)
        }
        _ => stage.weight,
    };
    Some(Exposure { weight, segments: stage.segments.clone(), ..base })
}

/// The variants a plan releases: what the default serves if that is not only the control
/// variant, else every non-control variant in equal shares. `None` when the flag has no
/// non-control variant (there is nothing to release).
fn treatment(flag: &Flag, cfg: &EnvironmentConfig) -> Option<Serve> {
    let control = cfg.off_variant.as_deref().unwrap_or(OFF);
    let serves_control_only = match &cfg.default {
        None => !flag.variants.contains_key(ON) || control == ON,
        Some(Serve { variant: Some(v), .. }) => v == control,
        Some(Serve { rollout: Some(r), .. }) => r.variants.iter().all(|w| w.variant == control || w.weight == 0),
        Some(_) => true,
    };
    if !serves_control_only {
        return cfg.default.clone().or_else(|| Some(Serve::variant(ON)));
    }
    let others: Vec<&String> = flag.variants.keys().filter(|k| k.as_str() != control).collect();
    match others.as_slice() {
        [] => None,
        [one] => Some(Serve::variant(one.as_str())),
        many => {
            let n = u32::try_from(many.len()).unwrap_or(u32::MAX);
            let variants = many.iter().map(|v| WeightedVariant { variant: (*v).clone(), weight: 1 }).collect();
            Some(Serve { variant: None, rollout: Some(Rollout { variants, total: Some(n), ..Rollout::default() }) })
        }
    }
}

/// The environment's configuration for a plan entering `stage` (the flag is turned on, the
/// default serves the change, the exposure is the stage's). `None` when the flag has nothing but
/// its control variant to release.
pub fn configure_stage(flag: &Flag, environment: &str, stage: &Stage) -> Option<EnvironmentConfig> {
    let mut cfg = flag.environments.get(environment).cloned().unwrap_or_default();
    cfg.default = Some(treatment(flag, &cfg)?);
    cfg.enabled = true;
    cfg.exposure = stage_exposure(stage, cfg.exposure.as_ref());
    Some(cfg)
}

/// The environment's configuration after `dial-down --to weight`: the exposure never widens and
/// canary segments are dropped, so nobody new is exposed. `None` when nothing changes.
pub fn dialed_down(cfg: &EnvironmentConfig, weight: u32) -> Option<EnvironmentConfig> {
    let current = ceiling_weight(cfg.exposure.as_ref());
    let target = weight.min(current);
    let base = cfg.exposure.clone().unwrap_or_default();
    let stage = Stage { segments: Vec::new(), weight: target, min_dwell_ms: 0 };
    let exposure = stage_exposure(&stage, Some(&base)).unwrap_or(Exposure { weight: FULL_WEIGHT, ..base });
    let next = EnvironmentConfig { exposure: Some(exposure), ..cfg.clone() };
    (next != *cfg).then_some(next)
}

/// What a dial-down or kill changed, so that `restore` can put it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// Whether the environment was on.
    pub enabled: bool,
    /// Its exposure then.
    pub exposure: Option<Exposure>,
    /// When the first dial-down or kill happened, Unix milliseconds.
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const MIN: i64 = 60_000;

    #[test]
    fn stages_parse_segments_and_percentages_and_refuse_shrinking_ones() {
        let stages = parse_stages("internal, 1%, 5%, 25%, 50%, 100%", 30 * MIN).unwrap();
        let summary: Vec<(Vec<String>, u32)> = stages.iter().map(|s| (s.segments.clone(), s.weight)).collect();
        let internal = vec!["internal".to_owned()];
        assert_eq!(
            summary,
            [
                (internal.clone(), 0),
                (internal.clone(), 1_000),
                (internal.clone(), 5_000),
                (internal.clone(), 25_000),
                (internal.clone(), 50_000),
                (internal, 100_000)
            ]
        );
        assert_eq!(parse_stages("0.125%", 0).unwrap()[0].weight, 125);
        let own = parse_stages("internal@1h, 5%, 50%@2d", 30 * MIN).unwrap();
        assert_eq!(own.iter().map(|s| s.min_dwell_ms).collect::<Vec<_>>(), [60 * MIN, 30 * MIN, 2 * 1_440 * MIN]);
        assert_eq!(parse_stages("5%@soon", 0), Err(PlanError::BadDuration("soon".into())));
        assert_eq!(parse_stages("5%,1%", 0), Err(PlanError::Shrinking { index: 1, percent: "1%".into() }));
        assert_eq!(parse_stages("5%,101%", 0), Err(PlanError::BadStage { index: 1, text: "101%".into() }));
        assert_eq!(parse_stages("5%,,10%", 0), Err(PlanError::BadStage { index: 1, text: String::new() }));
        assert_eq!(parse_stages("0.0001%", 0), Err(PlanError::BadStage { index: 0, text: "0.0001%".into() }));
    }

    #[test]
    fn builtin_templates_parse_and_cover_every_kind() {
        let templates = builtin_templates();
        assert!(templates.iter().all(|t| !t.stages.is_empty()));
        for kind in [FlagKind::Release, FlagKind::Experiment, FlagKind::Operational, FlagKind::KillSwitch] {
            assert_eq!(templates.iter().filter(|t| t.default_for.contains(&kind)).count(), 1, "{kind:?}");
        }
        assert_eq!(templates[0].stages.len(), 6);
    }

    #[test]
    fn percentages_print_and_parse_back() {
        assert_eq!(
            (percent_text(5_000), percent_text(125), percent_text(100_000)),
            ("5%".into(), "0.125%".into(), "100%".into())
        );
        assert_eq!((weight_percent(5_000), weight_percent(125)), (5.0, 0.125));
    }

    fn flag(value: serde_json::Value) -> Flag {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_stage_turns_the_flag_on_serves_the_change_and_caps_exposure() {
        let stage = Stage { segments: vec!["internal".into()], weight: 5_000, min_dwell_ms: 0 };
        let boolean = flag(serde_json::json!({"environments": {"production": {"default": {"variant": "off"}}}}));
        let cfg = configure_stage(&boolean, "production", &stage).unwrap();
        assert!(cfg.enabled);
        assert_eq!(cfg.default, Some(Serve::variant("on")));
        assert_eq!(
            cfg.exposure.as_ref().map(|e| (e.weight, e.segments.clone())),
            Some((5_000, vec!["internal".into()]))
        );
        assert_eq!(exposure_weight(Some(&cfg)), 5_000);

        // Multi-variant: a default that serves only the control is replaced by an even split of
        // the others; a default that already splits is kept, to be scaled by the exposure.
        let multi = flag(serde_json::json!({"variants": {"off": 0, "a": 1, "b": 2}, "environments": {}}));
        let split = configure_stage(&multi, "production", &stage).unwrap().default.unwrap().rollout.unwrap();
        assert_eq!(
            split.variants.iter().map(|v| (v.variant.as_str(), v.weight)).collect::<Vec<_>>(),
            [("a", 1), ("b", 1)]
        );
        let full = Stage { segments: vec![], weight: FULL_WEIGHT, min_dwell_ms: 0 };
        assert_eq!(configure_stage(&multi, "production", &full).unwrap().exposure, None, "no ceiling at 100%");
        let only_control = flag(serde_json::json!({"variants": {"off": 0}, "environments": {}}));
        assert!(configure_stage(&only_control, "production", &stage).is_none());
    }

    #[test]
    fn a_dial_down_never_widens_and_drops_canary_segments() {
        let at = |weight, segments: &[&str]| EnvironmentConfig {
            enabled: true,
            exposure: Some(Exposure {
                weight,
                segments: segments.iter().map(|s| (*s).to_owned()).collect(),
                ..Exposure::default()
            }),
            ..EnvironmentConfig::default()
        };
        let down = dialed_down(&at(25_000, &["internal"]), 5_000).unwrap();
        assert_eq!(down.exposure.as_ref().map(|e| (e.weight, e.segments.len())), Some((5_000, 0)));
        assert_eq!(dialed_down(&down, 5_000), None, "idempotent");
        assert_eq!(dialed_down(&down, 50_000), None, "never widens");
        let released = EnvironmentConfig { enabled: true, ..EnvironmentConfig::default() };
        assert_eq!(exposure_weight(dialed_down(&released, 1_000).as_ref()), 1_000);
        assert_eq!(exposure_weight(Some(&EnvironmentConfig::default())), 0, "off is no exposure");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30m"), Ok(30 * MIN));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("2h"), Ok(120 * MIN));
        assert_eq!(parse_duration("1d"), Ok(1_440 * MIN));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert!(parse_duration("30").is_err() && parse_duration("m").is_err() && parse_duration("5w").is_err());
    }

    #[test]
    fn a_plan_is_driven_through_every_stage_by_a_fake_clock() {
        let stages = parse_stages("internal,1%,5%,25%,50%,100%", 30 * MIN).unwrap();
        let clock = ManualClock::new(1_000_000);
        let mut state = PlanState::start(clock.now_ms());
        let mut visited = vec![state.stage];
        for _ in 0..20 {
            match decide(&stages, &state, clock.now_ms(), Health::Healthy) {
                Decision::Advance { to } => {
                    assert_eq!(to, state.stage + 1, "never skips a stage");
                    state = apply(&stages, &state, Command::Advance, clock.now_ms()).unwrap();
                    visited.push(state.stage);
                }
                Decision::Stay { wait_ms: Some(wait), .. } => clock.advance_ms(wait),
                Decision::Stay { .. } => break,
            }
        }
        assert_eq!(visited, [0, 1, 2, 3, 4, 5]);
        assert_eq!(state.status, Status::Released);
        assert_eq!(clock.now_ms() - 1_000_000, 5 * 30 * MIN, "each stage dwelt exactly its minimum");
    }

    #[test]
    fn progression_waits_for_dwell_and_for_healthy_guards() {
        let stages = parse_stages("1%,5%", 10 * MIN).unwrap();
        let state = PlanState::start(0);
        let early = decide(&stages, &state, 9 * MIN, Health::Healthy);
        assert_eq!(early, Decision::Stay { reason: "the stage's minimum dwell has not passed", wait_ms: Some(MIN) });
        assert!(matches!(decide(&stages, &state, 10 * MIN, Health::Unknown), Decision::Stay { wait_ms: None, .. }));
        assert!(matches!(decide(&stages, &state, 10 * MIN, Health::Unhealthy), Decision::Stay { wait_ms: None, .. }));
        assert_eq!(decide(&stages, &state, 10 * MIN, Health::Healthy), Decision::Advance { to: 1 });
    }

    #[test]
    fn pause_resume_and_rollback() {
        let stages = parse_stages("1%,5%,25%,100%", 10 * MIN).unwrap();
        let running = PlanState { stage: 2, entered_at_ms: 0, status: Status::Running };
        let paused = apply(&stages, &running, Command::Pause, 5 * MIN).unwrap();
        assert_eq!((paused.stage, paused.status, paused.entered_at_ms), (2, Status::Paused, 0));
        assert!(matches!(decide(&stages, &paused, 100 * MIN, Health::Healthy), Decision::Stay { .. }));
        let resumed = apply(&stages, &paused, Command::Resume, 50 * MIN).unwrap();
        assert_eq!((resumed.status, resumed.entered_at_ms), (Status::Running, 50 * MIN), "the dwell restarts");
        assert!(apply(&stages, &resumed, Command::Resume, 50 * MIN).is_err());

        let back = apply(&stages, &resumed, Command::Rollback { to_zero: false }, 60 * MIN).unwrap();
        assert_eq!((back.stage, back.status), (1, Status::Paused), "one stage back, and held");
        let zero = apply(&stages, &back, Command::Rollback { to_zero: true }, 61 * MIN).unwrap();
        assert_eq!((zero.stage, zero.status), (0, Status::RolledBack));
        assert!(apply(&stages, &zero, Command::Advance, 62 * MIN).is_err(), "a rolled-back plan is over");
    }

    #[test]
    fn a_restored_state_resumes_without_skipping_or_repeating_a_stage() {
        // The state is all a restart needs: the decision depends on nothing else.
        let stages = parse_stages("1%,5%,25%", 10 * MIN).unwrap();
        let saved = PlanState { stage: 1, entered_at_ms: 100 * MIN, status: Status::Running };
        let restored: PlanState = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        assert_eq!(
            decide(&stages, &restored, 105 * MIN, Health::Healthy),
            decide(&stages, &saved, 105 * MIN, Health::Healthy)
        );
        assert_eq!(decide(&stages, &restored, 110 * MIN, Health::Healthy), Decision::Advance { to: 2 });
    }
}

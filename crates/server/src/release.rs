//! Release plans, as pure decisions: ordered exposure stages, what a command does to a plan, and
//! whether a running plan should move on. No I/O and no clock of its own: time comes in as an
//! argument (a [`Clock`] at the edge), so a thin loop applies decisions and tests drive plans
//! through every stage without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use dimmer_engine::model::FULL_WEIGHT;

/// Where the current time comes from; injected so that progression is testable.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_ms()
    }
}

/// A clock that moves only when told to (tests, simulations, `dimmer demo`).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self(AtomicI64::new(start_ms))
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

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

/// Why a plan specification or command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A stage in a `--stages` list is neither a percentage nor a segment key.
    #[error("stages[{index}]: \"{text}\" is not a percentage (such as 5% or 0.5%) or a segment key")]
    BadStage {
        /// Its position.
        index: usize,
        /// What was written.
        text: String,
    },
    /// Percentages must grow from stage to stage.
    #[error("stages[{index}]: {percent} is lower than the stage before it; stages only widen exposure")]
    Shrinking {
        /// Its position.
        index: usize,
        /// The offending percentage.
        percent: String,
    },
    /// A plan needs at least one stage.
    #[error("stages: a plan needs at least one stage")]
    Empty,
    /// A duration such as `30m` did not parse.
    #[error("dwell: \"{0}\" is not a duration such as 90s, 30m, 2h or 1d")]
    BadDuration(String),
    /// The command does not apply in the plan's status.
    #[error("the plan is {status:?}: cannot {command}")]
    NotAllowed {
        /// The status.
        status: Status,
        /// The command.
        command: &'static str,
    },
}

/// Parses a duration: a number and a unit (`ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration(text: &str) -> Result<i64, PlanError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| PlanError::BadDuration(text.to_owned()))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(PlanError::BadDuration(text.to_owned())),
    };
    n.checked_mul(factor).ok_or_else(|| PlanError::BadDuration(text.to_owned()))
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
/// Every stage gets `dwell_ms` as its minimum dwell.
pub fn parse_stages(spec: &str, dwell_ms: i64) -> Result<Vec<Stage>, PlanError> {
    let mut stages = Vec::new();
    let mut segments: Vec<String> = Vec::new();
    let mut weight = 0;
    for (index, raw) in spec.split(',').map(str::trim).enumerate() {
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
        stages.push(Stage { segments: segments.clone(), weight, min_dwell_ms: dwell_ms });
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse_stages("5%,1%", 0), Err(PlanError::Shrinking { index: 1, percent: "1%".into() }));
        assert_eq!(parse_stages("5%,101%", 0), Err(PlanError::BadStage { index: 1, text: "101%".into() }));
        assert_eq!(parse_stages("5%,,10%", 0), Err(PlanError::BadStage { index: 1, text: String::new() }));
        assert_eq!(parse_stages("0.0001%", 0), Err(PlanError::BadStage { index: 0, text: "0.0001%".into() }));
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

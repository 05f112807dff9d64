//! Schedules: a task body that fires on a cron expression, in a time zone.
//!
//! A schedule is validated here ([`from_json`]) and decides here, without
//! I/O, which firing is due ([`Schedule::due`]); the engine's schedule loop
//! (`dts_engine::schedules`) stores what it decided and creates the tasks.
//!
//! Every firing has an instant (ms since the epoch). The schedule keeps
//! `handledUntil`: every firing at or before it has been handled (fired,
//! skipped for overlap, or missed). A firing that comes due is handled on
//! time; one more than the grace late (every server was down) is missed,
//! and missed firings collapse into their latest, which `catchUp` fires
//! (`last`) or drops (`none`).
//!
//! Each fired run's task id is derived from the schedule's name and the
//! firing instant ([`firing_task_id`]), so a firing stored twice is one
//! task.

use super::submit::{self, SubmitLimits, ValidationError};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;

/// Runs a schedule's view keeps, newest first.
pub const RUNS_KEPT: usize = 20;
/// The longest schedule name, in bytes.
pub const MAX_NAME_BYTES: usize = 100;
/// The longest cron expression, in bytes.
const MAX_CRON_BYTES: usize = 200;

/// What a firing does while the schedule's previous task has not ended
/// (`overlap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// `skip`: no task for this firing (the default).
    #[default]
    Skip,
    /// `allow`: a task for every firing, however many run at once.
    Allow,
    /// `cancel-previous`: cancel the running one, then fire.
    CancelPrevious,
}

impl Overlap {
    /// Every value, in the API's spelling.
    pub const NAMES: [&'static str; 3] = ["skip", "allow", "cancel-previous"];
}

/// What happens to firings missed while no server ran (`catchUp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// `none`: drop them (the default).
    #[default]
    None,
    /// `last`: fire the latest of them once, at once.
    Last,
}

impl CatchUp {
    /// Every value, in the API's spelling.
    pub const NAMES: [&'static str; 2] = ["none", "last"];
}

/// What became of one firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// A task was created for it.
    Fired,
    /// The previous task had not ended and `overlap` is `skip`.
    SkippedOverlap,
    /// It came due while no server ran, and `catchUp` is `none`.
    Missed,
    /// Its task could not be created (the body no longer passes the
    /// server's limits); `note` says why.
    Failed,
}

impl RunOutcome {
    /// The API's spelling (as serde writes it), also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Fired => "fired",
            RunOutcome::SkippedOverlap => "skipped-overlap",
            RunOutcome::Missed => "missed",
            RunOutcome::Failed => "failed",
        }
    }
}

/// One handled firing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The firing's instant, ms since the epoch.
    pub at: u64,
    /// What became of it.
    pub outcome: RunOutcome,
    /// The task it created (`fired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Whether its task is stored: the node that decided the firing stores
    /// it next, and any node finishes the job if that one died.
    #[serde(default)]
    pub stored: bool,
    /// Why, for a run that did not fire on time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A stored schedule: what was asked for, and how far it has fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Its unique name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The cron expression: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// The task body each firing submits, as given.
    pub task: Value,
    /// What a firing does while the previous task runs.
    pub overlap: Overlap,
    /// What happens to firings missed while no server ran.
    pub catch_up: CatchUp,
    /// Paused schedules do not fire.
    pub paused: bool,
    /// When it was created, ms since the epoch.
    pub created_at: u64,
    /// Every firing at or before this instant is handled.
    pub handled_until: u64,
    /// Tasks created by firings so far.
    pub fired: u64,
    /// Firings skipped because the previous task still ran.
    pub skipped_overlaps: u64,
    /// The latest handled firings, newest first (at most [`RUNS_KEPT`]).
    pub runs: Vec<Run>,
    /// Grows by one with every change; the store's compare-and-set
    /// compares it.
    pub version: u64,
}

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: Cron,
    timezone: Tz,
}

impl Cadence {
    /// Parses `cron` (5 fields, or 6 with seconds first) in `timezone`; the
    /// error names the field to blame.
    pub fn parse(cron: &str, timezone: &str) -> Result<Cadence, ValidationError> {
        if cron.len() > MAX_CRON_BYTES {
            return Err(ValidationError::field(
                "too_large",
                "cron",
                format!("cron is longer than {MAX_CRON_BYTES} bytes"),
            ));
        }
        let fields = cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(ValidationError::field(
                "invalid_field",
                "cron",
                format!(
                    "cron {cron:?} has {fields} fields; it takes 5 (minute hour day month weekday) or 6 (seconds first)"
                ),
            ));
        }
        let cron = Cron::from_str(cron).map_err(|e| {
            ValidationError::field(
                "invalid_field",
                "cron",
                format!("cron {cron:?} is not a cron expression: {e}"),
            )
        })?;
        let timezone = Tz::from_str(timezone).map_err(|_| {
            ValidationError::field(
                "invalid_field",
                "timezone",
                format!(
                    "timezone {timezone:?} is not an IANA time zone name (such as UTC or Europe/Paris)"
                ),
            )
        })?;
        Ok(Cadence { cron, timezone })
    }

    /// The first firing strictly after `after_ms`; `None` when there is
    /// none (an expression that never matches again).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let start = self.local(after_ms)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The latest firing at or before `at_ms`.
    pub fn latest_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let start = self.local(at_ms)?;
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        u64::try_from(previous.timestamp_millis()).ok()
    }

    /// `ms` in the schedule's zone, cut to the whole second (firings fall
    /// on whole seconds, and the expression reads no finer).
    fn local(&self, ms: u64) -> Option<DateTime<Tz>> {
        let ms = ms - ms % 1000;
        let utc: DateTime<Utc> = Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
        Some(utc.with_timezone(&self.timezone))
    }
}

/// The firing a schedule should handle now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing is due; the next firing is at this instant, if ever.
    Nothing {
        /// The next firing, ms since the epoch.
        next: Option<u64>,
    },
    /// A firing came due within the grace: handle it (fire or skip for
    /// overlap).
    OnTime {
        /// The firing's instant.
        at: u64,
    },
    /// Firings were missed; `at` is the latest of them. `catchUp` decides
    /// whether it fires; the earlier ones are dropped.
    Missed {
        /// The earliest missed firing.
        first: u64,
        /// The latest missed firing.
        at: u64,
    },
}

impl Schedule {
    /// The next firing to handle at `now`, reading firings more than
    /// `grace_ms` late as missed.
    pub fn due(&self, cadence: &Cadence, now: u64, grace_ms: u64) -> Due {
        let Some(next) = cadence.next_after(self.handled_until) else {
            return Due::Nothing { next: None };
        };
        if next > now {
            return Due::Nothing { next: Some(next) };
        }
        if next.saturating_add(grace_ms) >= now {
            return Due::OnTime { at: next };
        }
        let latest = cadence
            .latest_at_or_before(now.saturating_sub(grace_ms))
            .filter(|latest| *latest >= next)
            .unwrap_or(next);
        Due::Missed {
            first: next,
            at: latest,
        }
    }

    /// The schedule's cadence; stored schedules were validated, so this
    /// fails only for a hand-edited store.
    pub fn cadence(&self) -> Result<Cadence, ValidationError> {
        Cadence::parse(&self.cron, &self.timezone)
    }

    /// The task the latest fired run created, if any: the one `overlap`
    /// looks at.
    pub fn previous_task(&self) -> Option<&str> {
        self.runs
            .iter()
            .find(|run| run.outcome == RunOutcome::Fired)
            .and_then(|run| run.task_id.as_deref())
    }

    /// The newest run if it fired but its task is not stored yet.
    pub fn unstored_run(&self) -> Option<&Run> {
        self.runs
            .first()
            .filter(|run| run.outcome == RunOutcome::Fired && !run.stored)
    }

    /// Records a handled firing: `handledUntil` moves to `run.at`, the run
    /// goes first in `runs`, and the counters follow.
    pub fn record(&mut self, run: Run) {
        self.handled_until = self.handled_until.max(run.at);
        match run.outcome {
            RunOutcome::Fired => self.fired += 1,
            RunOutcome::SkippedOverlap => self.skipped_overlaps += 1,
            RunOutcome::Missed | RunOutcome::Failed => {}
        }
        self.runs.insert(0, run);
        self.runs.truncate(RUNS_KEPT);
    }

    /// The task body of a firing at `at`: the schedule's body, named after
    /// the schedule unless it has a name of its own. Validated again at
    /// every firing, against the server's limits of the day.
    pub fn firing_task(
        &self,
        at: u64,
        limits: &SubmitLimits,
    ) -> Result<submit::NewTask, ValidationError> {
        let mut body = self.task.clone();
        if let Value::Object(fields) = &mut body {
            fields
                .entry("name")
                .or_insert_with(|| Value::String(self.name.clone()));
        }
        let mut new = submit::from_json(&body, limits)?;
        new.id = firing_task_id(&self.name, at);
        Ok(new)
    }
}

/// The task id of schedule `name`'s firing at `at`: a UUID v5 of both, the
/// same on every server.
pub fn firing_task_id(name: &str, at: u64) -> String {
    /// The namespace of firing ids (a fixed random UUID).
    const FIRINGS: uuid::Uuid = uuid::Uuid::from_u128(0x5c1d_97a4_0b6e_4f3a_9d21_7e8c_4a60_f1b2);
    uuid::Uuid::new_v5(&FIRINGS, format!("{name}\n{at}").as_bytes()).to_string()
}

/// Whether `name` may name a schedule: it goes into URLs and store keys.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.')
}

const FIELDS: &[&str] = &["name", "cron", "timezone", "task", "overlap", "catchUp"];

/// Validates a `POST /v1/schedules` body into a schedule created at `now`,
/// firing first after `now`. The task body is validated as a submit would
/// be; its errors name `task.<field>`.
pub fn from_json(
    body: &Value,
    limits: &SubmitLimits,
    now: u64,
) -> Result<Schedule, ValidationError> {
    let Value::Object(fields) = body else {
        return Err(ValidationError::general(
            "invalid_body",
            "the request body must be a JSON object",
        ));
    };
    for key in fields.keys() {
        if !FIELDS.contains(&key.as_str()) {
            return Err(ValidationError::field(
                "unknown_field",
                key.as_str(),
                format!(
                    "unknown field `{key}` (expected one of {})",
                    FIELDS.join(", ")
                ),
            ));
        }
    }
    let name = required_string(fields, "name")?;
    if !is_valid_name(&name) {
        return Err(ValidationError::field(
            "invalid_field",
            "name",
            format!(
                "name {name:?} must be 1 to {MAX_NAME_BYTES} letters, digits, `.`, `_` or `-`, not starting with `.`"
            ),
        ));
    }
    let cron = required_string(fields, "cron")?;
    let timezone = match fields.get("timezone") {
        None | Some(Value::Null) => "UTC".to_string(),
        Some(_) => required_string(fields, "timezone")?,
    };
    Cadence::parse(&cron, &timezone)?;
    let overlap = choice(fields, "overlap", &Overlap::NAMES)?.unwrap_or_default();
    let catch_up = choice(fields, "catchUp", &CatchUp::NAMES)?.unwrap_or_default();
    let task = match fields.get("task") {
        Some(task @ Value::Object(_)) => task.clone(),
        Some(_) => {
            return Err(ValidationError::field(
                "invalid_field",
                "task",
                "task must be a task body (a JSON object, as POST /v1/tasks takes)",
            ));
        }
        None => {
            return Err(ValidationError::field(
                "missing_field",
                "task",
                "task is required: the task body each firing submits",
            ));
        }
    };
    if task.get("after").is_some_and(|after| !after.is_null()) {
        return Err(ValidationError::field(
            "invalid_field",
            "task.after",
            "a scheduled task cannot wait for other tasks (after): each firing would wait for the same ones",
        ));
    }
    submit::from_json(&task, limits).map_err(|e| ValidationError {
        field: Some(match e.field {
            Some(field) => format!("task.{field}"),
            None => "task".to_string(),
        }),
        ..e
    })?;
    Ok(Schedule {
        name,
        cron,
        timezone,
        task,
        overlap,
        catch_up,
        paused: false,
        created_at: now,
        handled_until: now,
        fired: 0,
        skipped_overlaps: 0,
        runs: Vec::new(),
        version: 0,
    })
}

fn required_string(fields: &Map<String, Value>, field: &str) -> Result<String, ValidationError> {
    match fields.get(field) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
        Some(Value::String(_)) => Err(ValidationError::field(
            "invalid_field",
            field,
            format!("{field} must not be empty"),
        )),
        Some(_) => Err(ValidationError::field(
            "invalid_field",
            field,
            format!("{field} must be a string"),
        )),
        None => Err(ValidationError::field(
            "missing_field",
            field,
            format!("{field} is required"),
        )),
    }
}

/// The value of `field`, one of `names` (serde spellings of `T`).
fn choice<T: for<'de> Deserialize<'de>>(
    fields: &Map<String, Value>,
    field: &str,
    names: &[&str],
) -> Result<Option<T>, ValidationError> {
    let Some(value) = fields.get(field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let refuse = || {
        ValidationError::field(
            "invalid_field",
            field,
            format!("{field} must be one of {}, not {value}", names.join(", ")),
        )
    };
    if !value.as_str().is_some_and(|text| names.contains(&text)) {
        return Err(refuse());
    }
    serde_json::from_value(value.clone())
        .map(Some)
        .map_err(|_| refuse())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({
            "name": "nightly",
            "cron": "*/5 * * * *",
            "timezone": "Europe/Paris",
            "task": {"templateFunction": "echo {{x}}", "variableJson": {"x": 1}, "inputList": ["a"]},
        })
    }

    fn field_of(body: Value) -> Option<String> {
        from_json(&body, &SubmitLimits::default(), 0)
            .expect_err("refused")
            .field
    }

    #[test]
    fn a_valid_body_reads_with_its_defaults() {
        let schedule = from_json(&body(), &SubmitLimits::default(), 1_000).expect("valid");
        assert_eq!(schedule.overlap, Overlap::Skip);
        assert_eq!(schedule.catch_up, CatchUp::None);
        assert_eq!(schedule.handled_until, 1_000);
        assert!(!schedule.paused);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut b = body();
        b["cron"] = json!("61 * * * *");
        assert_eq!(field_of(b).as_deref(), Some("cron"));
        let mut b = body();
        b["cron"] = json!("* * *");
        assert_eq!(field_of(b).as_deref(), Some("cron"));
        let mut b = body();
        b["timezone"] = json!("Mars/Olympus");
        assert_eq!(field_of(b).as_deref(), Some("timezone"));
        let mut b = body();
        b["name"] = json!("../etc");
        assert_eq!(field_of(b).as_deref(), Some("name"));
        let mut b = body();
        b["overlap"] = json!("sometimes");
        assert_eq!(field_of(b).as_deref(), Some("overlap"));
        let mut b = body();
        b["catchUp"] = json!("all");
        assert_eq!(field_of(b).as_deref(), Some("catchUp"));
        let mut b = body();
        b["task"]["timeoutSecs"] = json!(-1);
        assert_eq!(field_of(b).as_deref(), Some("task.timeoutSecs"));
        let mut b = body();
        b["task"]["templateFunction"] = json!("echo {{missing}}");
        assert!(field_of(b).is_some_and(|f| f.starts_with("task.")));
        let mut b = body();
        b["every"] = json!("day");
        assert_eq!(field_of(b).as_deref(), Some("every"));
        let mut b = body();
        b.as_object_mut().map(|o| o.remove("task"));
        assert_eq!(field_of(b).as_deref(), Some("task"));
    }

    #[test]
    fn a_six_field_expression_fires_every_second_and_five_fields_every_minute() {
        let every_second = Cadence::parse("* * * * * *", "UTC").expect("valid");
        assert_eq!(every_second.next_after(10_000), Some(11_000));
        assert_eq!(every_second.next_after(10_500), Some(11_000));
        let every_minute = Cadence::parse("* * * * *", "UTC").expect("valid");
        assert_eq!(every_minute.next_after(10_000), Some(60_000));
        assert_eq!(every_minute.latest_at_or_before(130_000), Some(120_000));
    }

    #[test]
    fn the_time_zone_moves_the_firings() {
        // 2026-01-15 00:00 UTC; 02:00 in Paris is 01:00 UTC in winter.
        let midnight_utc = 1_768_435_200_000;
        let paris = Cadence::parse("0 2 * * *", "Europe/Paris").expect("valid");
        assert_eq!(
            paris.next_after(midnight_utc),
            Some(midnight_utc + 3_600_000)
        );
    }

    #[test]
    fn due_firings_are_on_time_within_the_grace_and_missed_beyond_it() {
        let mut schedule = from_json(&body(), &SubmitLimits::default(), 0).expect("valid");
        schedule.cron = "* * * * * *".into();
        schedule.handled_until = 10_000;
        let cadence = schedule.cadence().expect("valid");
        assert_eq!(
            schedule.due(&cadence, 10_900, 5_000),
            Due::Nothing { next: Some(11_000) }
        );
        assert_eq!(
            schedule.due(&cadence, 12_500, 5_000),
            Due::OnTime { at: 11_000 }
        );
        // Down from 10 s to 60 s: firings 11 s to 55 s are missed.
        assert_eq!(
            schedule.due(&cadence, 60_000, 5_000),
            Due::Missed {
                first: 11_000,
                at: 55_000
            }
        );
    }

    #[test]
    fn recording_runs_keeps_the_newest_and_counts_them() {
        let mut schedule = from_json(&body(), &SubmitLimits::default(), 0).expect("valid");
        for at in 1..=30 {
            let outcome = if at % 2 == 0 {
                RunOutcome::Fired
            } else {
                RunOutcome::SkippedOverlap
            };
            schedule.record(Run {
                at,
                outcome,
                task_id: Some(firing_task_id("nightly", at)),
                stored: false,
                note: None,
            });
        }
        assert_eq!(schedule.runs.len(), RUNS_KEPT);
        assert_eq!(schedule.runs[0].at, 30);
        assert_eq!((schedule.fired, schedule.skipped_overlaps), (15, 15));
        assert_eq!(schedule.handled_until, 30);
        assert_eq!(
            schedule.previous_task(),
            Some(firing_task_id("nightly", 30).as_str())
        );
    }

    #[test]
    fn an_outcome_s_spelling_is_serde_s() {
        for outcome in [
            RunOutcome::Fired,
            RunOutcome::SkippedOverlap,
            RunOutcome::Missed,
            RunOutcome::Failed,
        ] {
            assert_eq!(serde_json::json!(outcome), outcome.as_str());
        }
    }

    #[test]
    fn a_firing_s_task_id_is_the_same_everywhere_and_differs_per_firing() {
        assert_eq!(firing_task_id("a", 1), firing_task_id("a", 1));
        assert_ne!(firing_task_id("a", 1), firing_task_id("a", 2));
        assert_ne!(firing_task_id("a", 1), firing_task_id("b", 1));
        assert!(crate::is_valid_task_id(&firing_task_id("a", 1)));
    }
}

//! Change events: what changed between two versions of a CKAN dataset, published on HDX's event
//! bus (a Redis stream) for consumers (notifications, n8n workflows, HAPI pipelines).
//!
//! - [`detect`]: two `package_show` dicts in, [`ChangeEvent`]s out, as the old
//!   `eventapi.tasks.detect_changes` made them (docs/hdx-contract.md §5);
//! - [`display`], [`markdown`], [`pyvalue`]: display values, Markdown to plain text, and Python's
//!   comparison rules the detector follows;
//! - [`bus`]: appends a run's events to the stream, once per job even across retries;
//! - [`consumer`]: reads the stream with a consumer group, at least once (the library behind
//!   `hdx-jobs events listen`);
//! - [`task`]: the job `eventapi.tasks.detect_changes.detect_changes`.

pub mod bus;
pub mod consumer;
pub mod detect;
pub mod display;
pub mod event;
pub mod markdown;
pub mod pyvalue;
pub mod stats;
pub mod task;

pub use bus::{EventBus, EventBusOptions, PushOutcome};
pub use detect::{detect_changes, sheet_changes, DetectError, SheetChange};
pub use event::{event_time_now, ChangeEvent, ChangedField};
pub use task::{register, DetectChanges, DETECT_CHANGES};

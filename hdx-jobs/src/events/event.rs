//! The change events themselves, in the shape HDX's consumers parse from the stream's `body`:
//! the old service's dataclasses (`DatasetEvent`, `ResourceEvent`, `FileStructureEvent`) turned
//! into JSON with their fields in the same order.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

/// A dataset was created (no old dict).
pub const DATASET_CREATED: &str = "dataset-created";
/// A dataset's new state is `deleted`.
pub const DATASET_DELETED: &str = "dataset-deleted";
/// Tracked dataset fields changed.
pub const DATASET_METADATA_CHANGED: &str = "dataset-metadata-changed";
/// A resource id is only in the old dict.
pub const RESOURCE_DELETED: &str = "resource-deleted";
/// A resource id is only in the new dict.
pub const RESOURCE_CREATED: &str = "resource-created";
/// A resource's `last_modified` changed.
pub const RESOURCE_DATA_CHANGED: &str = "resource-data-changed";
/// Tracked resource fields changed.
pub const RESOURCE_METADATA_CHANGED: &str = "resource-metadata-changed";
/// A sheet only in the newer file-structure check.
pub const SHEET_CREATED: &str = "spreadsheet-sheet-created";
/// A sheet only in the older file-structure check.
pub const SHEET_DELETED: &str = "spreadsheet-sheet-deleted";
/// A sheet in both checks with different tracked fields.
pub const SHEET_CHANGED: &str = "spreadsheet-sheet-changed";

/// Every event type, in the order the detector emits them.
pub const EVENT_TYPES: [&str; 10] = [
    DATASET_CREATED,
    DATASET_DELETED,
    DATASET_METADATA_CHANGED,
    RESOURCE_DELETED,
    RESOURCE_CREATED,
    RESOURCE_DATA_CHANGED,
    RESOURCE_METADATA_CHANGED,
    SHEET_CREATED,
    SHEET_DELETED,
    SHEET_CHANGED,
];

/// One entry of an event's `changed_fields`.
// Most entries are scalar changes, so boxing the larger variant would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ChangedField {
    /// A scalar field: values and their display values.
    Value {
        /// The field name.
        field: &'static str,
        /// The new value (Markdown fields: the plain text).
        new_value: Value,
        /// What people read for the new value.
        new_display_value: Value,
        /// The old value.
        old_value: Value,
        /// What people read for the old value.
        old_display_value: Value,
    },
    /// A list field (groups, tags, field_names, file_types, customviz): what came and went.
    List {
        /// The field name.
        field: &'static str,
        /// Items only in the new list.
        added_items: Vec<Value>,
        /// Items only in the old list.
        removed_items: Vec<Value>,
    },
}

impl ChangedField {
    /// The field name.
    pub fn field(&self) -> &'static str {
        match self {
            ChangedField::Value { field, .. } | ChangedField::List { field, .. } => field,
        }
    }
}

/// What every event of one detection run shares.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// UTC ISO-8601, one per run (Python's `datetime.utcnow().isoformat()`).
    pub event_time: String,
    /// `username` of the job.
    pub initiator_user_name: Value,
    /// The new dict's `name`.
    pub dataset_name: Value,
    /// The new dict's `title`.
    pub dataset_title: Value,
    /// The new dict's `id`.
    pub dataset_id: Value,
    /// The new dict's `organization.id`.
    pub org_id: Value,
    /// The new dict's `organization.name`.
    pub org_name: Value,
    /// The new dict's `organization.title`.
    pub org_title: Value,
}

/// The resource a resource or sheet event is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRef {
    /// Its `name`.
    pub name: Value,
    /// Its `id`.
    pub id: Value,
}

/// One change event.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// One of [`EVENT_TYPES`].
    pub event_type: &'static str,
    /// Time, user, dataset and organization of the run.
    pub run: std::sync::Arc<RunInfo>,
    /// The changes (`None` for sheet created/deleted, serialized as `null`).
    pub changed_fields: Option<Vec<ChangedField>>,
    /// Resource and sheet events: the resource.
    pub resource: Option<ResourceRef>,
    /// Sheet events: the sheet's name (or position when it has none).
    pub sheet_id: Option<Value>,
}

impl ChangeEvent {
    /// The event as a JSON value (what a consumer gets from `json.loads(body)`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Serialize for ChangeEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let extra = match (&self.resource, &self.sheet_id) {
            (None, _) => 0,
            (Some(_), None) => 2,
            (Some(_), Some(_)) => 3,
        };
        let run = &self.run;
        let mut map = serializer.serialize_map(Some(11 + extra))?;
        map.serialize_entry("event_type", self.event_type)?;
        map.serialize_entry("event_time", &run.event_time)?;
        map.serialize_entry("event_source", "ckan")?;
        map.serialize_entry("initiator_user_name", &run.initiator_user_name)?;
        map.serialize_entry("dataset_name", &run.dataset_name)?;
        map.serialize_entry("dataset_title", &run.dataset_title)?;
        map.serialize_entry("dataset_id", &run.dataset_id)?;
        map.serialize_entry("changed_fields", &self.changed_fields)?;
        map.serialize_entry("org_id", &run.org_id)?;
        map.serialize_entry("org_name", &run.org_name)?;
        map.serialize_entry("org_title", &run.org_title)?;
        if let Some(resource) = &self.resource {
            map.serialize_entry("resource_name", &resource.name)?;
            map.serialize_entry("resource_id", &resource.id)?;
            if let Some(sheet) = &self.sheet_id {
                map.serialize_entry("sheet_id", sheet)?;
            }
        }
        map.end()
    }
}

/// Now as Python's `datetime.utcnow().isoformat()`: `2024-05-01T12:34:56.123456`, without the
/// fraction when it is zero.
pub fn event_time_now() -> String {
    python_isoformat(chrono::Utc::now().naive_utc())
}

/// A naive time as Python's `isoformat()`.
pub fn python_isoformat(time: chrono::NaiveDateTime) -> String {
    use chrono::Timelike;
    if time.nanosecond() / 1000 == 0 {
        time.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        time.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn run() -> Arc<RunInfo> {
        Arc::new(RunInfo {
            event_time: "2024-01-01T00:00:00.000001".into(),
            initiator_user_name: json!("u"),
            dataset_name: json!("n"),
            dataset_title: json!("t"),
            dataset_id: json!("d"),
            org_id: json!("o"),
            org_name: json!("on"),
            org_title: json!("ot"),
        })
    }

    #[test]
    fn fields_come_in_the_dataclass_order() {
        let event = ChangeEvent {
            event_type: SHEET_CREATED,
            run: run(),
            changed_fields: None,
            resource: Some(ResourceRef {
                name: json!("r"),
                id: json!("rid"),
            }),
            sheet_id: Some(json!("Sheet1")),
        };
        let text = serde_json::to_string(&event).expect("json");
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(&text)
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "event_type",
                "event_time",
                "event_source",
                "initiator_user_name",
                "dataset_name",
                "dataset_title",
                "dataset_id",
                "changed_fields",
                "org_id",
                "org_name",
                "org_title",
                "resource_name",
                "resource_id",
                "sheet_id"
            ]
        );
        assert!(text.contains(r#""changed_fields":null"#));
        assert!(text.contains(r#""event_source":"ckan""#));
    }

    #[test]
    fn time_looks_like_python_isoformat() {
        let t = chrono::NaiveDate::from_ymd_opt(2023, 4, 3)
            .and_then(|d| d.and_hms_micro_opt(11, 3, 1, 810_847))
            .expect("time");
        assert_eq!(python_isoformat(t), "2023-04-03T11:03:01.810847");
        let t = chrono::NaiveDate::from_ymd_opt(2023, 4, 3)
            .and_then(|d| d.and_hms_opt(11, 3, 1))
            .expect("time");
        assert_eq!(python_isoformat(t), "2023-04-03T11:03:01");
        let now = event_time_now();
        assert!(
            chrono::NaiveDateTime::parse_from_str(&now, "%Y-%m-%dT%H:%M:%S%.f").is_ok(),
            "{now}"
        );
    }
}

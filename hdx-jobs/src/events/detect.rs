//! Change detection: two CKAN `package_show` dicts in, the change events out, exactly as the
//! old service (`eventapi.tasks.detect_changes`) made them (docs/hdx-contract.md §5): the same
//! event types, `changed_fields` entries, display values and Markdown handling.
//!
//! Where the old service's output depended on Python's set iteration (the order of events and
//! of `changed_fields`), ours is fixed: dataset event first; then deleted resources (old order),
//! created resources (new order), and for each resource in both (new order) its data, metadata
//! and sheet events; fields in the order of [`DATASET_FIELDS`] and [`RESOURCE_FIELDS`], list
//! fields after the scalar ones (except `field_names`/`file_types`, which replace their scalar
//! entry in place, as Python's dict did).
//! Input the old service rejected with a `KeyError` (no `type`, `id`, `name`, `title`; a resource
//! without `id`; a group without `name`...) is rejected here too, with the key named.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::display::display_value;
use super::event::*;
use super::markdown::plain_text;
use super::pyvalue::{py_eq, truthy};

/// Tracked dataset fields, in the order their changes are listed.
pub const DATASET_FIELDS: [&str; 22] = [
    "name",
    "title",
    "notes",
    "subnational",
    "dataset_source",
    "owner_org",
    "dataset_date",
    "data_update_frequency",
    "license_id",
    "license_other",
    "methodology",
    "maintainer",
    "methodology_other",
    "caveats",
    "archived",
    "private",
    "is_requestdata_type",
    "dataset_preview",
    "state",
    "num_of_rows",
    "field_names",
    "file_types",
];

/// Tracked resource fields.
pub const RESOURCE_FIELDS: [&str; 8] = [
    "name",
    "format",
    "description",
    "microdata",
    "resource_type",
    "url",
    "in_hapi",
    "qa_hapi_report",
];

/// Tracked sheet fields of a file-structure check.
pub const SHEET_FIELDS: [&str; 7] = [
    "nrows",
    "ncols",
    "header_hash",
    "hashtag_hash",
    "hxl_header_hash",
    "name",
    "has_merged_cells",
];

/// Fields compared and reported as the plain text of their Markdown.
pub const MARKDOWN_FIELDS: [&str; 5] = [
    "notes",
    "license_other",
    "methodology_other",
    "description",
    "caveats",
];

/// Only tags of this vocabulary are tracked.
pub const TAG_VOCABULARY_ID: &str = "b891512e-9516-4bf5-962a-7a289772a2a1";

/// Input the detector cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// A key the detection needs is missing.
    #[error("{place} has no {key:?}")]
    MissingKey {
        /// Where (`new_dataset_dict`, `a resource of old_dataset_dict`, ...).
        place: String,
        /// The key.
        key: &'static str,
    },
    /// A value has the wrong shape.
    #[error("{place} is not {expected}")]
    WrongShape {
        /// Where.
        place: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// A sheet change between two file-structure checks (what the fs check posts to CKAN and what
/// sheet events carry).
#[derive(Debug, Clone, PartialEq)]
pub struct SheetChange {
    /// The sheet's name, or its position as a string when it has none.
    pub sheet_id: Value,
    /// [`SHEET_CREATED`], [`SHEET_DELETED`] or [`SHEET_CHANGED`].
    pub event_type: &'static str,
    /// The changed fields (`None` for created and deleted sheets).
    pub changed_fields: Option<Vec<ChangedField>>,
}

/// Detects the changes from `old` to `new` (CKAN `package_show` dicts; `old` empty or `null` for
/// a new dataset) made by `username`, stamping every event with `event_time`.
pub fn detect_changes(
    username: &Value,
    old: &Value,
    new: &Value,
    event_time: &str,
) -> Result<Vec<ChangeEvent>, DetectError> {
    let empty = Map::new();
    let old = DatasetView::new(as_dict(old, "old_dataset_dict")?.unwrap_or(&empty));
    let new = DatasetView::new(as_dict(new, "new_dataset_dict")?.unwrap_or(&empty));
    let (typed, place) = if new.dict.is_empty() {
        (&old, "old_dataset_dict")
    } else {
        (&new, "new_dataset_dict")
    };
    let package_type = typed.required(TYPE, || place.into())?;
    if package_type.as_str() != Some("dataset") {
        return Ok(Vec::new());
    }
    let mut detector = Detector {
        source: RunSource {
            event_time,
            username,
            dataset_id: new.required(DATASET_ID, || "new_dataset_dict".into())?,
            dataset_name: new.required(DATASET_NAME, || "new_dataset_dict".into())?,
            dataset_title: new.required(TITLE, || "new_dataset_dict".into())?,
            organization: new.values[ORGANIZATION].and_then(Value::as_object),
        },
        run: None,
        events: Vec::new(),
    };
    detector.dataset(&old, &new)?;
    Ok(detector.events)
}

/// The sheet changes between two file-structure check items (`{state, hxl_proxy_response:
/// {sheets: [...]}}`): none unless both have sheets. Sheets are matched by name, or by position
/// when unnamed.
pub fn sheet_changes(old_item: &Value, new_item: &Value) -> Vec<SheetChange> {
    let (Some(new_sheets), Some(old_sheets)) = (sheets_of(new_item), sheets_of(old_item)) else {
        return Vec::new();
    };
    if new_sheets.is_empty() || old_sheets.is_empty() {
        return Vec::new();
    }
    fn by_key(list: &[Value]) -> Option<KeyedList<'_, (Value, &Value)>> {
        KeyedList::build(list, |i, sheet| {
            let name = sheet.as_object()?.get("name").filter(|n| truthy(n));
            let id = name
                .cloned()
                .unwrap_or_else(|| Value::String(i.to_string()));
            Some((Cow::Owned(key_of(&id).into_owned()), (id, sheet)))
        })
    }
    let (Some(old_map), Some(new_map)) = (by_key(old_sheets), by_key(new_sheets)) else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    for (key, (id, _)) in new_map.iter() {
        if !old_map.contains(key) {
            changes.push(SheetChange {
                sheet_id: id.clone(),
                event_type: SHEET_CREATED,
                changed_fields: None,
            });
        }
    }
    for (key, (id, _)) in old_map.iter() {
        if !new_map.contains(key) {
            changes.push(SheetChange {
                sheet_id: id.clone(),
                event_type: SHEET_DELETED,
                changed_fields: None,
            });
        }
    }
    for (key, (id, new_sheet)) in new_map.iter() {
        let Some((_, old_sheet)) = old_map.get(key) else {
            continue;
        };
        let (Some(old_sheet), Some(new_sheet)) = (old_sheet.as_object(), new_sheet.as_object())
        else {
            continue;
        };
        let fields = changes_with(old_sheet, new_sheet, &SHEET_FIELDS, None);
        if !fields.is_empty() {
            changes.push(SheetChange {
                sheet_id: id.clone(),
                event_type: SHEET_CHANGED,
                changed_fields: Some(fields),
            });
        }
    }
    changes
}

/// Python's `item.get('hxl_proxy_response', {}).get('sheets') or []`; `None` where Python
/// raised (the item or the response is not a dict).
fn sheets_of(item: &Value) -> Option<&[Value]> {
    match item.as_object()?.get("hxl_proxy_response") {
        None => Some(&[]),
        Some(Value::Object(response)) => match response.get("sheets") {
            Some(Value::Array(list)) => Some(list),
            Some(other) if truthy(other) => None,
            _ => Some(&[]),
        },
        Some(_) => None,
    }
}

/// What every event of a run shares, borrowed from the job's arguments.
struct RunSource<'a> {
    event_time: &'a str,
    username: &'a Value,
    dataset_id: &'a Value,
    dataset_name: &'a Value,
    dataset_title: &'a Value,
    organization: Option<&'a Map<String, Value>>,
}

impl RunSource<'_> {
    fn run_info(&self) -> RunInfo {
        let org_field = |key: &str| {
            self.organization
                .and_then(|o| find(o, key))
                .cloned()
                .unwrap_or(Value::Null)
        };
        RunInfo {
            event_time: self.event_time.to_string(),
            initiator_user_name: self.username.clone(),
            dataset_id: self.dataset_id.clone(),
            dataset_name: self.dataset_name.clone(),
            dataset_title: self.dataset_title.clone(),
            org_id: org_field("id"),
            org_name: org_field("name"),
            org_title: org_field("title"),
        }
    }
}

struct Detector<'a> {
    source: RunSource<'a>,
    /// Made from `source` with the first event: a pair without events (a sixth of the varied
    /// corpus) then copies nothing.
    run: Option<Arc<RunInfo>>,
    events: Vec<ChangeEvent>,
}

impl Detector<'_> {
    fn push(
        &mut self,
        event_type: &'static str,
        changed_fields: Option<Vec<ChangedField>>,
        resource: Option<ResourceRef>,
        sheet_id: Option<Value>,
    ) {
        self.events.push(ChangeEvent {
            event_type,
            run: self
                .run
                .get_or_insert_with(|| Arc::new(self.source.run_info()))
                .clone(),
            changed_fields,
            resource,
            sheet_id,
        });
    }

    fn dataset(&mut self, old: &DatasetView<'_>, new: &DatasetView<'_>) -> Result<(), DetectError> {
        let owner = |dict: &DatasetView<'_>| match dict.values[ORGANIZATION] {
            Some(Value::Object(org)) if !org.is_empty() => {
                find(org, "id").cloned().unwrap_or(Value::Null)
            }
            _ => Value::Null,
        };
        // owner_org is compared as the organization's id (the old service replaced it so).
        let owners = [owner(old), owner(new)];
        let fields = 0..DATASET_FIELDS.len();
        let compare = || {
            changes_of(
                &DATASET_FIELDS,
                (old.dict, &old.values[fields.clone()]),
                (new.dict, &new.values[fields.clone()]),
                Some([&owners[0], &owners[1]]),
            )
        };
        let (old_empty, new_empty) = (old.dict.is_empty(), new.dict.is_empty());

        if new.values[STATE].and_then(Value::as_str) == Some("deleted") {
            if !old_empty && !new_empty {
                let changes = compare();
                if !changes.is_empty() {
                    self.push(DATASET_DELETED, Some(changes), None, None);
                }
            }
            return Ok(());
        }

        let mut changes = compare();
        list_change(
            &mut changes,
            "groups",
            named_items((old, new), GROUPS, "name", |_| true)?,
        );
        list_change(
            &mut changes,
            "tags",
            named_items((old, new), TAGS, "name", |tag| {
                find(tag, "vocabulary_id").and_then(Value::as_str) == Some(TAG_VOCABULARY_ID)
            })?,
        );
        if !old_empty {
            list_change(
                &mut changes,
                "field_names",
                comma_items((old, new), FIELD_NAMES)?,
            );
            list_change(
                &mut changes,
                "file_types",
                comma_items((old, new), FILE_TYPES)?,
            );
        }
        list_change(
            &mut changes,
            "customviz",
            named_items((old, new), CUSTOMVIZ, "url", |_| true)?,
        );
        if !changes.is_empty() {
            let event_type = if old_empty {
                DATASET_CREATED
            } else {
                DATASET_METADATA_CHANGED
            };
            self.push(event_type, Some(changes), None, None);
        }
        self.resources(old, new)
    }

    fn resources(
        &mut self,
        old: &DatasetView<'_>,
        new: &DatasetView<'_>,
    ) -> Result<(), DetectError> {
        let old_list = old.list(RESOURCES, "old_dataset_dict")?;
        let new_list = new.list(RESOURCES, "new_dataset_dict")?;
        fn by_id<'a>(
            list: &'a [Value],
            place: &str,
        ) -> Result<KeyedList<'a, ResourceView<'a>>, DetectError> {
            KeyedList::try_build(list, |_, r| {
                let r = r.as_object().ok_or_else(|| DetectError::WrongShape {
                    place: format!("a resource of {place}"),
                    expected: "an object",
                })?;
                let view = ResourceView::new(r);
                let id = view.required(ID, || format!("a resource of {place}"))?;
                Ok((key_of(id), view))
            })
        }
        let old_map = by_id(old_list, "old_dataset_dict")?;
        let new_map = by_id(new_list, "new_dataset_dict")?;
        let empty = Map::new();
        let none = ResourceView::new(&empty);
        let metadata = 0..RESOURCE_FIELDS.len();

        for (key, resource) in old_map.iter() {
            if new_map.contains(key) {
                continue;
            }
            let reference = resource.reference("a deleted resource")?;
            let changes = resource.changes(&none, metadata.clone());
            if !changes.is_empty() {
                self.push(
                    RESOURCE_DELETED,
                    Some(changes),
                    Some(reference.into()),
                    None,
                );
            }
        }
        for (key, resource) in new_map.iter() {
            if old_map.contains(key) {
                continue;
            }
            let reference = resource.reference("a created resource")?;
            let changes = none.changes(resource, metadata.clone());
            if !changes.is_empty() {
                self.push(
                    RESOURCE_CREATED,
                    Some(changes),
                    Some(reference.into()),
                    None,
                );
            }
        }
        for (key, new_resource) in new_map.iter() {
            let Some(old_resource) = old_map.get(key) else {
                continue;
            };
            let reference = new_resource.reference("a resource of new_dataset_dict")?;
            let data = old_resource.changes(new_resource, LAST_MODIFIED..LAST_MODIFIED + 1);
            if !data.is_empty() {
                self.push(
                    RESOURCE_DATA_CHANGED,
                    Some(data),
                    Some(reference.into()),
                    None,
                );
            }
            let changes = old_resource.changes(new_resource, metadata.clone());
            if !changes.is_empty() {
                self.push(
                    RESOURCE_METADATA_CHANGED,
                    Some(changes),
                    Some(reference.into()),
                    None,
                );
            }
            let sheets = resource_sheet_changes(
                old_resource.values[FS_CHECK_INFO],
                new_resource.values[FS_CHECK_INFO],
            );
            for sheet in sheets {
                self.push(
                    sheet.event_type,
                    sheet.changed_fields,
                    Some(reference.into()),
                    Some(sheet.sheet_id),
                );
            }
        }
        Ok(())
    }
}

/// The keys the detector reads from a dataset dict: [`DATASET_FIELDS`], then the keys read for
/// the run, the lists and the resources.
const DATASET_KEYS: [&str; DATASET_FIELDS.len() + 7] = {
    let mut keys = [""; DATASET_FIELDS.len() + 7];
    let mut i = 0;
    while i < DATASET_FIELDS.len() {
        keys[i] = DATASET_FIELDS[i];
        i += 1;
    }
    keys[TYPE] = "type";
    keys[DATASET_ID] = "id";
    keys[ORGANIZATION] = "organization";
    keys[GROUPS] = "groups";
    keys[TAGS] = "tags";
    keys[CUSTOMVIZ] = "customviz";
    keys[RESOURCES] = "resources";
    keys
};
const TYPE: usize = DATASET_FIELDS.len();
const DATASET_ID: usize = TYPE + 1;
const ORGANIZATION: usize = TYPE + 2;
const GROUPS: usize = TYPE + 3;
const TAGS: usize = TYPE + 4;
const CUSTOMVIZ: usize = TYPE + 5;
const RESOURCES: usize = TYPE + 6;
const DATASET_NAME: usize = index_of(&DATASET_FIELDS, "name");
const TITLE: usize = index_of(&DATASET_FIELDS, "title");
const STATE: usize = index_of(&DATASET_FIELDS, "state");
const FIELD_NAMES: usize = index_of(&DATASET_FIELDS, "field_names");
const FILE_TYPES: usize = index_of(&DATASET_FIELDS, "file_types");

// A key listed twice would be found in its first place only.
const _: () = {
    let mut i = 0;
    while i < DATASET_KEYS.len() {
        assert!(
            index_of(&DATASET_KEYS, DATASET_KEYS[i]) == i,
            "a key twice in DATASET_KEYS"
        );
        i += 1;
    }
    let mut i = 0;
    while i < RESOURCE_KEYS.len() {
        assert!(
            index_of(&RESOURCE_KEYS, RESOURCE_KEYS[i]) == i,
            "a key twice in RESOURCE_KEYS"
        );
        i += 1;
    }
};

/// The position of `name` in `list`, at compile time.
const fn index_of(list: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < list.len() {
        let (a, b) = (list[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not in the list")
}

/// A dict with the values of a fixed list of keys (`keys[i]`'s value at `values[i]`), found in
/// one pass over its entries ([`pick_into`]): hashed lookups (SipHash of the key, then the
/// index table and the entry, cache misses on a cold dict) of a dataset's and each resource's
/// dozen keys were a good part of the detector's time in the profile of varied pairs.
struct Picked<'a, const N: usize> {
    dict: &'a Map<String, Value>,
    keys: &'static [&'static str; N],
    values: [Option<&'a Value>; N],
}

impl<'a, const N: usize> Picked<'a, N> {
    fn pick(dict: &'a Map<String, Value>, keys: &'static [&'static str; N]) -> Self {
        let mut values = [None; N];
        pick_into(dict, keys, &mut values);
        Picked { dict, keys, values }
    }

    /// The value of `keys[key]`, which the old service read with `dict[key]`.
    fn required(
        &self,
        key: usize,
        place: impl FnOnce() -> String,
    ) -> Result<&'a Value, DetectError> {
        self.values[key].ok_or_else(|| DetectError::MissingKey {
            place: place(),
            key: self.keys[key],
        })
    }
}

/// A dataset dict with the values of [`DATASET_KEYS`].
type DatasetView<'a> = Picked<'a, { DATASET_KEYS.len() }>;

impl<'a> DatasetView<'a> {
    fn new(dict: &'a Map<String, Value>) -> Self {
        Picked::pick(dict, &DATASET_KEYS)
    }

    /// The items of the list `DATASET_KEYS[key]` (none when missing or `null`).
    fn list(&self, key: usize, place: &str) -> Result<&'a [Value], DetectError> {
        list_of(self.values[key], DATASET_KEYS[key], place)
    }
}

/// The keys the detector reads from a resource: [`RESOURCE_FIELDS`], then `last_modified`
/// (data changes), `fs_check_info` (sheet changes) and `id`.
const RESOURCE_KEYS: [&str; RESOURCE_FIELDS.len() + 3] = {
    let mut keys = [""; RESOURCE_FIELDS.len() + 3];
    let mut i = 0;
    while i < RESOURCE_FIELDS.len() {
        keys[i] = RESOURCE_FIELDS[i];
        i += 1;
    }
    keys[LAST_MODIFIED] = "last_modified";
    keys[FS_CHECK_INFO] = "fs_check_info";
    keys[ID] = "id";
    keys
};
const LAST_MODIFIED: usize = RESOURCE_FIELDS.len();
const FS_CHECK_INFO: usize = LAST_MODIFIED + 1;
const ID: usize = LAST_MODIFIED + 2;
/// `name`'s position in [`RESOURCE_FIELDS`].
const NAME: usize = 0;
const _: () = assert!(matches!(RESOURCE_FIELDS[NAME].as_bytes(), b"name"));

/// A resource with the values of [`RESOURCE_KEYS`].
type ResourceView<'a> = Picked<'a, { RESOURCE_KEYS.len() }>;

impl<'a> ResourceView<'a> {
    fn new(dict: &'a Map<String, Value>) -> Self {
        Picked::pick(dict, &RESOURCE_KEYS)
    }

    /// The resource's name and id, checked present here (the old service raised without them)
    /// but cloned only into events.
    fn reference(&self, place: &str) -> Result<BorrowedRef<'a>, DetectError> {
        Ok(BorrowedRef {
            name: self.required(NAME, || place.to_string())?,
            id: self.required(ID, || place.to_string())?,
        })
    }

    /// The changes of `RESOURCE_KEYS[keys]` from this resource to `new`.
    fn changes(&self, new: &ResourceView<'_>, keys: std::ops::Range<usize>) -> Vec<ChangedField> {
        changes_of(
            &RESOURCE_KEYS[keys.clone()],
            (self.dict, &self.values[keys.clone()]),
            (new.dict, &new.values[keys]),
            None,
        )
    }
}

/// A resource's name and id, borrowed until an event needs them.
#[derive(Clone, Copy)]
struct BorrowedRef<'a> {
    name: &'a Value,
    id: &'a Value,
}

impl From<BorrowedRef<'_>> for ResourceRef {
    fn from(r: BorrowedRef<'_>) -> Self {
        ResourceRef {
            name: r.name.clone(),
            id: r.id.clone(),
        }
    }
}

/// Sheet changes of a resource, from its old and new `fs_check_info`: when it (a JSON string list
/// of checks) changed,
/// between its last two `success` items. Anything unreadable gives none (the old service logged
/// and went on).
fn resource_sheet_changes(old_info: Option<&Value>, new_info: Option<&Value>) -> Vec<SheetChange> {
    let new_info = new_info.unwrap_or(&Value::Null);
    let old_info = old_info.unwrap_or(&Value::Null);
    if !truthy(new_info) || py_eq(new_info, old_info) {
        return Vec::new();
    }
    let Some(history) = new_info
        .as_str()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return Vec::new();
    };
    let Some(items) = history.as_array() else {
        return Vec::new();
    };
    if items.iter().any(|item| !item.is_object()) {
        return Vec::new();
    }
    let successes: Vec<&Value> = items
        .iter()
        .filter(|item| item.get("state").and_then(Value::as_str) == Some("success"))
        .collect();
    match successes.as_slice() {
        [.., older, newer] => sheet_changes(older, newer),
        _ => Vec::new(),
    }
}

/// Scalar changes of `fields` between two dicts (Python's `_find_dict_changes`); `owners`
/// replaces the dicts' `owner_org` values.
fn changes_with(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    fields: &[&'static str],
    owners: Option<[&Value; 2]>,
) -> Vec<ChangedField> {
    let (old_values, new_values) = (pick(old, fields), pick(new, fields));
    changes_of(fields, (old, &old_values), (new, &new_values), owners)
}

/// [`changes_with`] on values already looked up: each side is a dict (for display values) and
/// the values of `fields` in it, by position.
fn changes_of(
    fields: &[&'static str],
    (old, old_values): (&Map<String, Value>, &[Option<&Value>]),
    (new, new_values): (&Map<String, Value>, &[Option<&Value>]),
    owners: Option<[&Value; 2]>,
) -> Vec<ChangedField> {
    static NULL: Value = Value::Null;
    let mut changes = Vec::new();
    for (i, &field) in fields.iter().enumerate() {
        let (old_raw, new_raw) = match (field, owners) {
            ("owner_org", Some([o, n])) => (o, n),
            _ => (
                old_values.get(i).copied().flatten().unwrap_or(&NULL),
                new_values.get(i).copied().flatten().unwrap_or(&NULL),
            ),
        };
        // Most tracked fields are unchanged, and the same JSON is the same value by Python's
        // rules and in plain text: settled before anything is looked up or rendered.
        if old_raw == new_raw {
            continue;
        }
        let (old_value, new_value) = if MARKDOWN_FIELDS.contains(&field) {
            let (o, n) = (plain_text(old_raw), plain_text(new_raw));
            if o == n {
                continue;
            }
            (Value::String(o), Value::String(n))
        } else {
            if py_eq(old_raw, new_raw) {
                continue;
            }
            (old_raw.clone(), new_raw.clone())
        };
        changes.push(ChangedField::Value {
            field,
            new_display_value: display_value(field, new, &new_value),
            old_display_value: display_value(field, old, &old_value),
            new_value,
            old_value,
        });
    }
    changes
}

/// Most fields [`pick`] looks up at once: the width of the fixed array it returns (a stack
/// array rather than a `Vec`, one allocation less per dict compared).
const MAX_PICKED: usize = 24;

// Every tracked-field list must fit in [`pick`]'s array: a field past `MAX_PICKED` would read as
// absent on both sides, so its changes would be dropped without a word. Adding a field past the
// limit fails the build here instead (raise `MAX_PICKED` then).
const _: () = assert!(
    DATASET_FIELDS.len() <= MAX_PICKED,
    "DATASET_FIELDS outgrew MAX_PICKED: raise MAX_PICKED"
);
const _: () = assert!(
    DATASET_KEYS.len() <= 64,
    "pick_into takes at most 64 fields"
);
const _: () = assert!(
    RESOURCE_KEYS.len() <= MAX_PICKED,
    "RESOURCE_FIELDS outgrew MAX_PICKED: raise MAX_PICKED"
);
const _: () = assert!(
    SHEET_FIELDS.len() <= MAX_PICKED,
    "SHEET_FIELDS outgrew MAX_PICKED: raise MAX_PICKED"
);

/// The values of `fields` in `dict`, by position (see [`pick_into`]); short field lists are
/// looked up directly.
///
/// Panics when `fields` is longer than [`MAX_PICKED`]: the fields past it would otherwise be
/// reported as unchanged (the tracked lists are checked at compile time above).
fn pick<'a>(
    dict: &'a Map<String, Value>,
    fields: &[&'static str],
) -> [Option<&'a Value>; MAX_PICKED] {
    assert!(
        fields.len() <= MAX_PICKED,
        "pick: {} fields, at most {MAX_PICKED}",
        fields.len()
    );
    let mut found = [None; MAX_PICKED];
    if fields.len() < 4 {
        for (slot, field) in found.iter_mut().zip(fields) {
            *slot = dict.get(*field);
        }
    } else {
        pick_into(dict, fields, &mut found[..fields.len()]);
    }
    found
}

/// Sets `found[i]` to the value of `fields[i]` in `dict` (at most 64 fields), in one pass over
/// the dict's entries. A key's bytes live in their own allocation, so reading them is a cache
/// miss on a cold dict, the largest cost in the profile of varied pairs: a key is read only when
/// some field has its length (the length is in the entry itself), and then only compared with
/// the fields of that length.
fn pick_into<'a>(dict: &'a Map<String, Value>, fields: &[&str], found: &mut [Option<&'a Value>]) {
    assert!(fields.len() <= 64 && found.len() >= fields.len());
    // Bit i of `by_length[n]`: `fields[i]` is n bytes long (the last slot: 31 bytes or more).
    let mut by_length = [0u64; 32];
    for (i, field) in fields.iter().enumerate() {
        by_length[field.len().min(31)] |= 1 << i;
    }
    for (key, value) in dict {
        let mut candidates = by_length[key.len().min(31)];
        while candidates != 0 {
            let i = candidates.trailing_zeros() as usize;
            if fields[i] == key {
                found[i] = Some(value);
                break;
            }
            candidates &= candidates - 1;
        }
    }
}

/// Records a list change, replacing a scalar entry of the same field in place.
fn list_change(
    changes: &mut Vec<ChangedField>,
    field: &'static str,
    diff: (Vec<Value>, Vec<Value>),
) {
    let (added_items, removed_items) = diff;
    if added_items.is_empty() && removed_items.is_empty() {
        return;
    }
    let entry = ChangedField::List {
        field,
        added_items,
        removed_items,
    };
    match changes.iter_mut().find(|c| c.field() == field) {
        Some(existing) => *existing = entry,
        None => changes.push(entry),
    }
}

/// Items of the list of dicts `DATASET_KEYS[field]`, by the value of `key`, kept when `keep`
/// says so: (added, removed).
fn named_items(
    (old, new): (&DatasetView<'_>, &DatasetView<'_>),
    field: usize,
    key: &'static str,
    keep: impl Fn(&Map<String, Value>) -> bool,
) -> Result<(Vec<Value>, Vec<Value>), DetectError> {
    fn keys<'a>(
        dict: &DatasetView<'a>,
        place: &str,
        field: usize,
        key: &'static str,
        keep: &dyn Fn(&Map<String, Value>) -> bool,
    ) -> Result<KeyedList<'a, &'a Value>, DetectError> {
        let list = dict.list(field, place)?;
        let mut entries = KeyedList::with_capacity(list.len());
        for item in list {
            let item = item.as_object().ok_or_else(|| DetectError::WrongShape {
                place: format!("an item of {place}.{}", DATASET_KEYS[field]),
                expected: "an object",
            })?;
            if !keep(item) {
                continue;
            }
            let value = find(item, key).ok_or_else(|| DetectError::MissingKey {
                place: format!("an item of {place}.{}", DATASET_KEYS[field]),
                key,
            })?;
            entries.insert(key_of(value), value);
        }
        Ok(entries)
    }
    let old = keys(old, "old_dataset_dict", field, key, &keep)?;
    let new = keys(new, "new_dataset_dict", field, key, &keep)?;
    Ok(diff(&old, &new, |v| (*v).clone()))
}

/// Items of the comma separated string `DATASET_KEYS[field]`: (added, removed).
fn comma_items(
    (old, new): (&DatasetView<'_>, &DatasetView<'_>),
    field: usize,
) -> Result<(Vec<Value>, Vec<Value>), DetectError> {
    fn text<'a>(dict: &DatasetView<'a>, place: &str, field: usize) -> Result<&'a str, DetectError> {
        match dict.values[field] {
            None | Some(Value::Null) => Ok(""),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(DetectError::WrongShape {
                place: format!("{place}.{}", DATASET_KEYS[field]),
                expected: "a comma separated string",
            }),
        }
    }
    fn items(text: &str) -> KeyedList<'_, &str> {
        let mut entries = KeyedList::default();
        for item in text.split(',') {
            entries.insert(Cow::Borrowed(item), item);
        }
        entries
    }
    let old = text(old, "old_dataset_dict", field)?;
    let new = text(new, "new_dataset_dict", field)?;
    // The usual case, the same text: the same items, nothing to split.
    if old == new {
        return Ok((Vec::new(), Vec::new()));
    }
    Ok(diff(&items(old), &items(new), |s| Value::from(*s)))
}

/// (items only in `new`, items only in `old`), in list order.
fn diff<T>(
    old: &KeyedList<'_, T>,
    new: &KeyedList<'_, T>,
    to_value: impl Fn(&T) -> Value,
) -> (Vec<Value>, Vec<Value>) {
    let only = |a: &KeyedList<'_, T>, b: &KeyedList<'_, T>| {
        a.iter()
            .filter(|(k, _)| !b.contains(k))
            .map(|(_, v)| to_value(v))
            .collect()
    };
    (only(new, old), only(old, new))
}

/// Python's `{key(i, item): item for i, item in enumerate(list)}`: first position of a key,
/// last item with it. Lists of up to a few dozen items (the usual resources, groups, tags,
/// sheets) are searched in place, comparing a fingerprint of each key before its bytes; longer
/// ones get a hash index.
#[derive(Debug)]
struct KeyedList<'k, T> {
    /// ([`fingerprint`] of the key, key, item), in order of first position.
    order: Vec<(u64, Cow<'k, str>, T)>,
    index: Option<HashMap<Cow<'k, str>, usize>>,
}

impl<T> Default for KeyedList<'_, T> {
    fn default() -> Self {
        KeyedList {
            order: Vec::new(),
            index: None,
        }
    }
}

/// Above this many items a list gets a hash index. Below, a search compares fingerprints (one
/// `u64` each) and the bytes of a key with the same fingerprint only: cheaper than SipHash on
/// every key (resource ids are 36 bytes), which the profile of varied pairs showed.
const SMALL_LIST: usize = 32;

/// A cheap summary of a key for [`KeyedList`]'s searches: its length and its first and last
/// eight bytes (resource ids, group and tag names differ there). Equal keys have equal
/// fingerprints; keys made to collide only cost a byte comparison each.
fn fingerprint(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let head = bytes
        .iter()
        .take(8)
        .fold(0u64, |h, b| h << 8 | u64::from(*b));
    let tail = bytes
        .iter()
        .rev()
        .take(8)
        .fold(0u64, |h, b| h << 8 | u64::from(*b));
    head ^ tail.rotate_left(32) ^ (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl<'k, T> KeyedList<'k, T> {
    /// Room for `items` entries, so building from a list of dozens of resources or groups does
    /// not grow the vector step by step (its reallocations showed in the profile of varied
    /// pairs).
    fn with_capacity(items: usize) -> Self {
        KeyedList {
            order: Vec::with_capacity(items),
            index: None,
        }
    }

    /// The position of `key`, whose fingerprint is `print`.
    fn find(&self, key: &str, print: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self
                .order
                .iter()
                .position(|(p, k, _)| *p == print && k == key),
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.find(key, fingerprint(key))
    }

    fn insert(&mut self, key: Cow<'k, str>, value: T) {
        let print = fingerprint(&key);
        if let Some(i) = self.find(&key, print) {
            self.order[i].2 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.order.len());
        } else if self.order.len() >= SMALL_LIST {
            let mut index: HashMap<Cow<'k, str>, usize> = self
                .order
                .iter()
                .enumerate()
                .map(|(i, (_, k, _))| (k.clone(), i))
                .collect();
            index.insert(key.clone(), self.order.len());
            self.index = Some(index);
        }
        self.order.push((print, key, value));
    }

    fn build<S>(
        items: &'k [S],
        key: impl Fn(usize, &'k S) -> Option<(Cow<'k, str>, T)>,
    ) -> Option<Self> {
        let mut list = KeyedList::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let (k, v) = key(i, item)?;
            list.insert(k, v);
        }
        Some(list)
    }

    fn try_build<S, E>(
        items: &'k [S],
        key: impl Fn(usize, &'k S) -> Result<(Cow<'k, str>, T), E>,
    ) -> Result<Self, E> {
        let mut list = KeyedList::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let (k, v) = key(i, item)?;
            list.insert(k, v);
        }
        Ok(list)
    }

    fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    fn get(&self, key: &str) -> Option<&T> {
        self.position(key).map(|i| &self.order[i].2)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.order.iter().map(|(_, k, v)| (k.as_ref(), v))
    }
}

/// A map key for a JSON value: strings as themselves, anything else as tagged JSON text (so the
/// string "1" and the number 1 stay different keys, as in Python).
fn key_of(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(format!("\u{0}{other}")),
    }
}

fn as_dict<'a>(
    value: &'a Value,
    place: &str,
) -> Result<Option<&'a Map<String, Value>>, DetectError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        _ => Err(DetectError::WrongShape {
            place: place.to_string(),
            expected: "an object",
        }),
    }
}

/// A list field's items (`value` is the field's value in `place`): none when it is missing or
/// `null`.
fn list_of<'a>(
    value: Option<&'a Value>,
    field: &str,
    place: &str,
) -> Result<&'a [Value], DetectError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(list)) => Ok(list),
        Some(_) => Err(DetectError::WrongShape {
            place: format!("{place}.{field}"),
            expected: "a list",
        }),
    }
}

/// `dict.get(key)` for the small dicts of CKAN's lists and the organization (a tag or a group
/// has about six keys, an organization ten): a pass over the entries costs less than hashing the
/// key (SipHash), which the profile of varied pairs showed for every tag and group.
fn find<'a>(dict: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    dict.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TIME: &str = "2024-05-01T10:00:00.000001";

    fn org(id: &str, title: &str) -> Value {
        json!({"id": id, "name": id, "title": title})
    }

    fn dataset(extra: Value) -> Value {
        let mut base = json!({
            "type": "dataset", "id": "d1", "name": "ds", "title": "Dataset",
            "state": "active", "organization": org("o1", "Org One"), "owner_org": "o1",
            "notes": "Some notes", "resources": [], "groups": [], "tags": []
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        base
    }

    fn detect(old: &Value, new: &Value) -> Vec<Value> {
        detect_changes(&json!("alice"), old, new, TIME)
            .expect("detect")
            .iter()
            .map(ChangeEvent::to_json)
            .collect()
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["event_type"].as_str().unwrap_or(""))
            .collect()
    }

    fn fields(event: &Value) -> Vec<&str> {
        event["changed_fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f["field"].as_str().unwrap_or(""))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn resource(id: &str, name: &str, extra: Value) -> Value {
        let mut r = json!({"id": id, "name": name, "format": "CSV", "last_modified": "2024-01-01T00:00:00"});
        if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                r.insert(k.clone(), v.clone());
            }
        }
        r
    }

    #[test]
    fn every_event_carries_the_run_and_dataset() {
        let old = dataset(json!({}));
        let new = dataset(json!({"title": "Renamed"}));
        let events = detect(&old, &new);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e["event_type"], "dataset-metadata-changed");
        assert_eq!(e["event_time"], TIME);
        assert_eq!(e["event_source"], "ckan");
        assert_eq!(e["initiator_user_name"], "alice");
        assert_eq!(
            (&e["dataset_name"], &e["dataset_title"], &e["dataset_id"]),
            (&json!("ds"), &json!("Renamed"), &json!("d1"))
        );
        assert_eq!(
            (&e["org_id"], &e["org_name"], &e["org_title"]),
            (&json!("o1"), &json!("o1"), &json!("Org One"))
        );
        assert_eq!(
            e["changed_fields"],
            json!([{"field": "title", "new_value": "Renamed", "new_display_value": "Renamed",
                    "old_value": "Dataset", "old_display_value": "Dataset"}])
        );
        assert!(e.get("resource_id").is_none() && e.get("sheet_id").is_none());
    }

    #[test]
    fn nothing_changed_gives_nothing() {
        let d = dataset(json!({"resources": [resource("r1", "a.csv", json!({}))]}));
        assert!(detect(&d, &d).is_empty());
    }

    #[test]
    fn created_dataset_lists_fields_and_lists() {
        let new = dataset(json!({
            "groups": [{"name": "rou"}], "field_names": "a,b", "subnational": "1",
            "tags": [{"name": "t1", "vocabulary_id": TAG_VOCABULARY_ID}, {"name": "free"}],
            "customviz": [{"url": "https://viz"}],
            "resources": [resource("r1", "a.csv", json!({"description": "**Bold** text", "microdata": false}))]
        }));
        for old in [json!({}), Value::Null] {
            let events = detect(&old, &new);
            assert_eq!(types(&events), ["dataset-created", "resource-created"]);
            assert_eq!(
                fields(&events[0]),
                [
                    "name",
                    "title",
                    "notes",
                    "subnational",
                    "owner_org",
                    "state",
                    "field_names",
                    "groups",
                    "tags",
                    "customviz"
                ]
            );
            let cf = &events[0]["changed_fields"];
            assert_eq!(cf[4]["new_display_value"], "Org One");
            assert_eq!(cf[4]["old_value"], json!(null));
            assert_eq!(cf[3]["new_display_value"], "subnational");
            assert_eq!(cf[3]["old_display_value"], "not subnational");
            assert_eq!(cf[2]["old_value"], "");
            assert_eq!(
                cf[6]["new_value"], "a,b",
                "field_names stays scalar on creation"
            );
            assert_eq!(
                cf[7],
                json!({"field": "groups", "added_items": ["rou"], "removed_items": []})
            );
            assert_eq!(cf[8]["added_items"], json!(["t1"]));
            assert_eq!(cf[9]["added_items"], json!(["https://viz"]));
            assert_eq!(events[1]["resource_name"], "a.csv");
            assert_eq!(events[1]["resource_id"], "r1");
            assert_eq!(
                fields(&events[1]),
                ["name", "format", "description", "microdata"]
            );
            assert_eq!(events[1]["changed_fields"][2]["new_value"], "Bold text");
            assert_eq!(
                events[1]["changed_fields"][3]["new_display_value"],
                "does not contain microdata"
            );
        }
    }

    #[test]
    fn deleted_dataset_gives_one_event_and_nothing_else() {
        let old = dataset(json!({"resources": [resource("r1", "a.csv", json!({}))]}));
        let new = dataset(json!({"state": "deleted", "groups": [{"name": "x"}]}));
        let events = detect(&old, &new);
        assert_eq!(types(&events), ["dataset-deleted"]);
        assert_eq!(fields(&events[0]), ["state"]);
        assert_eq!(events[0]["changed_fields"][0]["new_value"], "deleted");
        assert!(detect(&json!({}), &new).is_empty(), "no old dict: nothing");
    }

    #[test]
    fn display_values_of_dataset_fields() {
        let old = dataset(json!({
            "subnational": "1", "dataset_date": "[2022-03-03T00:00:00 TO *]",
            "data_update_frequency": "30", "license_id": "cc-by"
        }));
        let new = dataset(json!({
            "organization": org("o2", "Org Two"), "owner_org": "stale-value",
            "subnational": "0", "dataset_date": "[2022-03-03T00:00:00 TO 2022-03-10T00:00:00]",
            "data_update_frequency": "365", "license_id": "hdx-multi"
        }));
        let events = detect(&old, &new);
        let cf = &events[0]["changed_fields"];
        assert_eq!(
            fields(&events[0]),
            [
                "subnational",
                "owner_org",
                "dataset_date",
                "data_update_frequency",
                "license_id"
            ]
        );
        let pairs: Vec<(Value, Value)> = cf
            .as_array()
            .expect("list")
            .iter()
            .map(|f| {
                (
                    f["old_display_value"].clone(),
                    f["new_display_value"].clone(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                (json!("subnational"), json!("not subnational")),
                (json!("Org One"), json!("Org Two")),
                (
                    json!("March 03, 2022 to *"),
                    json!("March 03, 2022 to March 10, 2022")
                ),
                (json!("Every month"), json!("Every year")),
                (
                    json!("Creative Commons Attribution International"),
                    json!("Multiple Licenses")
                ),
            ]
        );
        assert_eq!(
            cf[1]["new_value"], "o2",
            "owner_org is the organization's id"
        );
        assert_eq!(cf[1]["old_value"], "o1");
    }

    #[test]
    fn owner_org_follows_the_organization_not_the_field() {
        let old = dataset(json!({"owner_org": "x"}));
        let new = dataset(json!({"owner_org": "y"}));
        assert!(detect(&old, &new).is_empty());
    }

    #[test]
    fn markdown_formatting_only_is_no_change_and_real_changes_are_plain() {
        let old = dataset(json!({"notes": "This is a paragraph with bold and _italic_ text."}));
        let new = dataset(json!({"notes": "This is a paragraph with **bold** and *italic* text."}));
        assert!(detect(&old, &new).is_empty());
        let new =
            dataset(json!({"notes": "This is a paragraph with **bold** text.\n\n<b>New</b>"}));
        let events = detect(&old, &new);
        assert_eq!(
            events[0]["changed_fields"][0],
            json!({"field": "notes",
                   "new_value": "This is a paragraph with bold text. New",
                   "new_display_value": "This is a paragraph with bold text. New",
                   "old_value": "This is a paragraph with bold and italic text.",
                   "old_display_value": "This is a paragraph with bold and italic text."})
        );
    }

    #[test]
    fn values_compare_as_python_does() {
        let old = dataset(json!({"archived": false, "num_of_rows": 10}));
        let new = dataset(json!({"archived": 0, "num_of_rows": 10.0}));
        assert!(detect(&old, &new).is_empty());
        let new = dataset(json!({"archived": "false", "num_of_rows": 10}));
        assert_eq!(fields(&detect(&old, &new)[0]), ["archived"]);
    }

    #[test]
    fn list_fields_groups_tags_customviz_field_names_file_types() {
        let vocab = |n: &str| json!({"name": n, "vocabulary_id": TAG_VOCABULARY_ID});
        let old = dataset(json!({
            "groups": [{"name": "rou"}, {"name": "bel"}],
            "tags": [vocab("health"), vocab("geodata"), {"name": "ignored"}],
            "customviz": [{"url": "u1"}],
            "field_names": "a,b", "file_types": "csv,xlsx"
        }));
        let new = dataset(json!({
            "groups": [{"name": "rou"}, {"name": "fra"}],
            "tags": [vocab("health"), {"name": "other-ignored"}],
            "customviz": [{"url": "u2"}],
            "field_names": "a,b,c", "file_types": "xlsx,csv"
        }));
        let events = detect(&old, &new);
        assert_eq!(types(&events), ["dataset-metadata-changed"]);
        let cf = &events[0]["changed_fields"];
        assert_eq!(
            cf,
            &json!([
                {"field": "field_names", "added_items": ["c"], "removed_items": []},
                {"field": "file_types", "new_value": "xlsx,csv", "new_display_value": "xlsx,csv",
                 "old_value": "csv,xlsx", "old_display_value": "csv,xlsx"},
                {"field": "groups", "added_items": ["fra"], "removed_items": ["bel"]},
                {"field": "tags", "added_items": [], "removed_items": ["geodata"]},
                {"field": "customviz", "added_items": ["u2"], "removed_items": ["u1"]}
            ]),
            "field_names replaces its scalar entry; a reorder stays a scalar change"
        );
    }

    #[test]
    fn resources_created_deleted_data_and_metadata() {
        let old = dataset(json!({"resources": [
            resource("r1", "keep.csv", json!({"description": "Description"})),
            resource("r2", "gone.geojson", json!({"microdata": true})),
            resource("r3", "same.csv", json!({}))
        ]}));
        let new = dataset(json!({"resources": [
            resource("r3", "same.csv", json!({})),
            resource("r4", "new.geojson", json!({"url": "http://x"})),
            resource("r1", "renamed.csv", json!({"description": "*Modified* description",
                                                  "last_modified": "2024-02-01T00:00:00"}))
        ]}));
        let events = detect(&old, &new);
        assert_eq!(
            types(&events),
            [
                "resource-deleted",
                "resource-created",
                "resource-data-changed",
                "resource-metadata-changed"
            ]
        );
        assert_eq!(events[0]["resource_name"], "gone.geojson");
        let deleted = &events[0]["changed_fields"];
        assert_eq!(fields(&events[0]), ["name", "format", "microdata"]);
        assert_eq!(deleted[2]["old_display_value"], "contains microdata");
        assert_eq!(
            deleted[2]["new_display_value"],
            "does not contain microdata"
        );
        assert_eq!(events[1]["resource_id"], "r4");
        assert_eq!(fields(&events[1]), ["name", "format", "url"]);
        assert_eq!(events[2]["resource_name"], "renamed.csv");
        assert_eq!(
            events[2]["changed_fields"],
            json!([{"field": "last_modified", "new_value": "2024-02-01T00:00:00",
                    "new_display_value": "2024-02-01T00:00:00", "old_value": "2024-01-01T00:00:00",
                    "old_display_value": "2024-01-01T00:00:00"}])
        );
        assert_eq!(fields(&events[3]), ["name", "description"]);
        assert_eq!(
            events[3]["changed_fields"][1]["new_value"],
            "Modified description"
        );
    }

    fn fs_info(items: Value) -> Value {
        Value::String(items.to_string())
    }

    fn check(sheets: Value) -> Value {
        json!({"state": "success", "timestamp": "t", "hxl_proxy_response": {"format": "XLSX", "sheets": sheets}})
    }

    #[test]
    fn sheets_created_deleted_changed() {
        let sheet = |name: &str, nrows: u64| {
            json!({"name": name, "nrows": nrows, "ncols": 5,
            "has_merged_cells": false, "is_hidden": false, "header_hash": "h"})
        };
        let older = check(json!([sheet("Sheet1", 10), sheet("Old", 1)]));
        let newer = check(json!([sheet("Sheet1", 17), sheet("Sheet2", 3)]));
        let old_info = fs_info(json!([older]));
        let new_info = fs_info(json!([older, {"state": "failure"}, newer]));
        let old = dataset(
            json!({"resources": [resource("r1", "book.xlsx", json!({"fs_check_info": old_info}))]}),
        );
        let new = dataset(
            json!({"resources": [resource("r1", "book.xlsx", json!({"fs_check_info": new_info}))]}),
        );
        let events = detect(&old, &new);
        assert_eq!(
            types(&events),
            [
                "spreadsheet-sheet-created",
                "spreadsheet-sheet-deleted",
                "spreadsheet-sheet-changed"
            ]
        );
        assert_eq!(events[0]["sheet_id"], "Sheet2");
        assert_eq!(events[0]["changed_fields"], Value::Null);
        assert_eq!(events[0]["resource_id"], "r1");
        assert_eq!(events[1]["sheet_id"], "Old");
        assert_eq!(events[2]["sheet_id"], "Sheet1");
        assert_eq!(fields(&events[2]), ["nrows"]);
        assert_eq!(events[2]["changed_fields"][0]["old_value"], 10);

        // Same history, one success only, or unreadable history: no sheet events.
        assert!(detect(&new, &new).is_empty());
        let one = dataset(json!({"resources": [resource("r1", "book.xlsx",
            json!({"fs_check_info": fs_info(json!([{"state": "failure"}, newer]))}))]}));
        assert!(detect(&old, &one).is_empty());
        let broken = dataset(json!({"resources": [resource("r1", "book.xlsx",
            json!({"fs_check_info": "[not json"}))]}));
        assert!(detect(&old, &broken).is_empty());
    }

    #[test]
    fn unnamed_sheets_match_by_position() {
        let older = check(json!([{"nrows": 1}, {"name": "", "nrows": 2}]));
        let newer = check(json!([{"nrows": 1}, {"name": null, "nrows": 3}, {"nrows": 4}]));
        let changes = sheet_changes(&older, &newer);
        let summary: Vec<(Value, &str)> = changes
            .iter()
            .map(|c| (c.sheet_id.clone(), c.event_type))
            .collect();
        assert_eq!(
            summary,
            vec![(json!("2"), SHEET_CREATED), (json!("1"), SHEET_CHANGED)]
        );
        assert!(
            sheet_changes(&older, &check(json!([]))).is_empty(),
            "no sheets: nothing"
        );
    }

    #[test]
    fn long_lists_and_duplicate_keys_behave_like_python_dicts() {
        let mut list: KeyedList<'_, u32> = KeyedList::default();
        for round in 0..2u32 {
            for i in 0..40u32 {
                list.insert(Cow::Owned(format!("k{i}")), round * 100 + i);
            }
        }
        assert_eq!(list.iter().count(), 40, "each key once");
        assert_eq!(
            list.iter().next(),
            Some(("k0", &100)),
            "first position, last value"
        );
        assert_eq!(list.get("k39"), Some(&139));
        assert!(!list.contains("k40"));

        let groups = |names: std::ops::Range<u32>| {
            names
                .map(|n| json!({"name": format!("g{n}")}))
                .collect::<Vec<_>>()
        };
        let old = dataset(json!({"groups": groups(0..30)}));
        let new = dataset(json!({"groups": groups(5..35)}));
        let events = detect(&old, &new);
        let change = &events[0]["changed_fields"][0];
        assert_eq!(
            change["added_items"],
            json!(["g30", "g31", "g32", "g33", "g34"])
        );
        assert_eq!(
            change["removed_items"],
            json!(["g0", "g1", "g2", "g3", "g4"])
        );
    }

    #[test]
    fn showcases_and_other_types_give_nothing() {
        let showcase = json!({"type": "showcase", "id": "s1", "name": "sc", "title": "Showcase",
                              "tags": [{"name": "hxl", "vocabulary_id": TAG_VOCABULARY_ID}]});
        assert!(detect(&json!({}), &showcase).is_empty());
        let mut changed = showcase.clone();
        changed["title"] = json!("Other");
        assert!(detect(&showcase, &changed).is_empty());
    }

    #[test]
    fn input_python_rejected_is_rejected_with_the_key() {
        let err = |old: Value, new: Value| {
            detect_changes(&json!("u"), &old, &new, TIME)
                .expect_err("rejected")
                .to_string()
        };
        assert!(err(json!({}), json!({"id": "d"})).contains("\"type\""));
        assert!(err(
            json!({}),
            json!({"type": "dataset", "name": "n", "title": "t"})
        )
        .contains("\"id\""));
        let no_res_id = dataset(json!({"resources": [{"name": "x"}]}));
        assert!(err(json!({}), no_res_id).contains("a resource of new_dataset_dict has no \"id\""));
        let bad_group = dataset(json!({"groups": [{"title": "no name"}]}));
        assert!(err(json!({}), bad_group).contains("\"name\""));
        assert!(
            err(json!("text"), dataset(json!({}))).contains("old_dataset_dict is not an object")
        );
    }

    /// `pick` used to return 24 slots and drop any field after the 24th, so a 25th tracked
    /// field would never have been reported as changed. Now it refuses such a list (and the
    /// tracked lists are checked against `MAX_PICKED` at compile time).
    #[test]
    #[should_panic(expected = "at most 24")]
    fn regression_pick_refuses_more_fields_than_it_returns() {
        const NAMES: [&str; 25] = [
            "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13",
            "f14", "f15", "f16", "f17", "f18", "f19", "f20", "f21", "f22", "f23", "f24",
        ];
        let dict = Map::new();
        let _ = pick(&dict, &NAMES);
    }

    /// The last tracked dataset field (the one nearest the `pick` limit) is still compared.
    #[test]
    fn regression_the_last_tracked_dataset_field_is_compared() {
        let last = DATASET_FIELDS[DATASET_FIELDS.len() - 1];
        let mut old = Map::new();
        old.insert(last.to_string(), json!("a"));
        let mut new = old.clone();
        new.insert(last.to_string(), json!("b"));
        let changes = changes_with(&old, &new, &DATASET_FIELDS, None);
        assert_eq!(changes.len(), 1, "{last}");
        assert_eq!(changes[0].field(), last);
    }
}

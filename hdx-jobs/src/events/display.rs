//! Display values: what people read for a changed field (`new_display_value`,
//! `old_display_value`), with the old service's tables (update frequencies, HDX license titles)
//! and formats (`[2022-03-03T00:00:00 TO *]` -> `March 03, 2022 to *`).

use serde_json::{Map, Value};

use super::pyvalue::{py_str, truthy};

/// `data_update_frequency` values (CKAN sends strings) to their names.
pub const UPDATE_FREQUENCIES: [(&str, &str); 10] = [
    ("1", "Every day"),
    ("7", "Every week"),
    ("14", "Every two weeks"),
    ("30", "Every month"),
    ("90", "Every three months"),
    ("180", "Every six months"),
    ("365", "Every year"),
    ("0", "Live"),
    ("-2", "As needed"),
    ("-1", "Never"),
];

/// `license_id` values to the titles the old service showed (CKAN's and HDX's licenses).
pub const LICENSES: [(&str, &str); 22] = [
    ("cc-by", "Creative Commons Attribution International"),
    (
        "cc-by-igo",
        "Creative Commons Attribution for Intergovernmental Organisations",
    ),
    ("cc-by-sa", "Creative Commons Attribution Share-Alike"),
    ("cc-nc", "Creative Commons Non-Commercial (Any)"),
    ("cc-zero", "Creative Commons CCZero"),
    ("gfdl", "GNU Free Documentation License"),
    ("hdx-multi", "Multiple Licenses"),
    (
        "hdx-odc-by",
        "Open Data Commons Attribution License (ODC-BY)",
    ),
    ("hdx-odc-odbl", "Open Database License (ODC-ODbL)"),
    ("hdx-other", "Other"),
    (
        "hdx-pddl",
        "Open Data Commons Public Domain Dedication and License (PDDL)",
    ),
    ("notspecified", "License not specified"),
    ("odc-by", "Open Data Commons Attribution License"),
    ("odc-odbl", "Open Data Commons Open Database License (ODbL)"),
    (
        "odc-pddl",
        "Open Data Commons Public Domain Dedication and License (PDDL)",
    ),
    ("other-at", "Other (Attribution)"),
    ("other-closed", "Other (Not Open)"),
    ("other-nc", "Other (Non-Commercial)"),
    ("other-open", "Other (Open)"),
    ("other-pd", "Other (Public Domain)"),
    ("other-pd-nr", "Public Domain / No Restrictions"),
    ("uk-ogl", "UK Open Government Licence (OGL)"),
];

/// The display value of `field` whose (already compared) value is `value`, in the dict it came
/// from (`owner_org` shows that dict's organization title).
pub fn display_value(field: &str, source: &Map<String, Value>, value: &Value) -> Value {
    match field {
        "owner_org" => match source.get("organization") {
            Some(Value::Object(org)) if !org.is_empty() => {
                org.get("title").cloned().unwrap_or(Value::Null)
            }
            _ => Value::Null,
        },
        "subnational" => Value::from(if value.as_str() == Some("1") {
            "subnational"
        } else {
            "not subnational"
        }),
        "dataset_date" => Value::String(dataset_date(value)),
        "data_update_frequency" => lookup(&UPDATE_FREQUENCIES, value),
        "license_id" => lookup(&LICENSES, value),
        "microdata" => Value::from(if truthy(value) {
            "contains microdata"
        } else {
            "does not contain microdata"
        }),
        _ => value.clone(),
    }
}

/// A table lookup on string values; anything else (or an unknown key) shows as itself.
fn lookup(table: &[(&str, &str)], value: &Value) -> Value {
    value
        .as_str()
        .and_then(|key| table.iter().find(|(k, _)| *k == key))
        .map(|(_, name)| Value::from(*name))
        .unwrap_or_else(|| value.clone())
}

/// `[2022-03-03T00:00:00 TO 2022-03-10T00:00:00]` -> `March 03, 2022 to March 10, 2022`; `*`
/// stays `*`; empty or missing -> "". A part that is not a `Y-m-d` date is shown as it is (the
/// old service raised there and lost every event of the run).
pub fn dataset_date(value: &Value) -> String {
    if !truthy(value) {
        return String::new();
    }
    let text: String = py_str(value)
        .chars()
        .filter(|c| !matches!(c, '[' | ']' | ' '))
        .collect();
    text.split("TO")
        .map(|part| {
            if part.contains('*') {
                part.to_string()
            } else {
                long_date(part.split('T').next().unwrap_or(part))
                    .unwrap_or_else(|| part.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join(" to ")
}

/// `2022-03-03` -> `March 03, 2022` (Python's `strptime('%Y-%m-%d')` then `'%B %d, %Y'`).
fn long_date(text: &str) -> Option<String> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if parts.next().is_some() || !digits(year, 4, 4) || !digits(month, 1, 2) || !digits(day, 1, 2) {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        year.parse().ok()?,
        month.parse().ok()?,
        day.parse().ok()?,
    )?;
    Some(date.format("%B %d, %Y").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shown(field: &str, value: Value) -> Value {
        display_value(field, &Map::new(), &value)
    }

    #[test]
    fn dates() {
        assert_eq!(
            dataset_date(&json!("[2022-03-03T00:00:00 TO *]")),
            "March 03, 2022 to *"
        );
        assert_eq!(
            dataset_date(&json!("[2022-03-03T00:00:00 TO 2022-3-10T23:59:59]")),
            "March 03, 2022 to March 10, 2022"
        );
        assert_eq!(dataset_date(&json!("2021-12-31")), "December 31, 2021");
        assert_eq!(dataset_date(&json!(null)), "");
        assert_eq!(dataset_date(&json!("")), "");
        assert_eq!(dataset_date(&json!("[garbage TO *]")), "garbage to *");
        assert_eq!(dataset_date(&json!("2022-02-30")), "2022-02-30");
    }

    #[test]
    fn frequencies_licenses_flags() {
        assert_eq!(
            shown("data_update_frequency", json!("7")),
            json!("Every week")
        );
        assert_eq!(
            shown("data_update_frequency", json!("-2")),
            json!("As needed")
        );
        assert_eq!(shown("data_update_frequency", json!("60")), json!("60"));
        assert_eq!(shown("data_update_frequency", json!(null)), json!(null));
        assert_eq!(
            shown("license_id", json!("cc-by")),
            json!("Creative Commons Attribution International")
        );
        assert_eq!(
            shown("license_id", json!("hdx-multi")),
            json!("Multiple Licenses")
        );
        assert_eq!(shown("license_id", json!("mine")), json!("mine"));
        assert_eq!(shown("subnational", json!("1")), json!("subnational"));
        assert_eq!(shown("subnational", json!("0")), json!("not subnational"));
        assert_eq!(shown("subnational", json!(1)), json!("not subnational"));
        assert_eq!(shown("subnational", json!(null)), json!("not subnational"));
        assert_eq!(shown("microdata", json!(true)), json!("contains microdata"));
        assert_eq!(
            shown("microdata", json!(false)),
            json!("does not contain microdata")
        );
        assert_eq!(
            shown("microdata", json!(null)),
            json!("does not contain microdata")
        );
        assert_eq!(shown("name", json!("x")), json!("x"));
    }

    #[test]
    fn owner_org_shows_the_organization_title() {
        let dict = json!({"organization": {"id": "o1", "title": "INNAGO"}});
        let dict = dict.as_object().expect("object");
        assert_eq!(
            display_value("owner_org", dict, &json!("o1")),
            json!("INNAGO")
        );
        assert_eq!(shown("owner_org", json!("o1")), json!(null));
    }
}

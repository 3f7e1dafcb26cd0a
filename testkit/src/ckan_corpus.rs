//! A deterministic corpus of varied CKAN dataset pairs (`package_show` dicts before and after an
//! edit) for the change detector's benchmark and its regression test.
//!
//! One fixture-sized pair says little about real traffic: HDX's datasets range from one resource
//! to dozens, their notes from a line to pages of Markdown, and an edit may touch nothing
//! tracked or half the dataset. So each pair here is shaped like the real dicts (the shared
//! fixture pair's fields: organization, groups, vocabulary tags, license, methodology, untracked
//! counters, resources with URLs, descriptions, file-structure checks and shape info) with sizes
//! drawn from a long tail (1–50 resources, Markdown from a few words to about 5 KB) and from zero
//! to several kinds of change of [`CHANGE_KINDS`], every one the detector knows plus edits it
//! must ignore (untracked fields, Markdown reformatting).
//!
//! Pair `i` depends only on `i` (its own seeded generator), so a longer corpus starts with the
//! same pairs as a shorter one, and the golden events recorded for the first pairs stay valid.

use std::ops::Range;

use serde_json::{json, Map, Value};

/// The HDX tag vocabulary the detector tracks (`hdx_jobs::events::detect::TAG_VOCABULARY_ID`;
/// repeated because testkit does not depend on hdx-jobs).
const TAG_VOCABULARY_ID: &str = "b891512e-9516-4bf5-962a-7a289772a2a1";

/// The kinds of change a pair may have, in the order counts are reported.
pub const CHANGE_KINDS: [&str; 33] = [
    "no change at all",
    "untracked fields only",
    "dataset created",
    "dataset deleted",
    "title",
    "name",
    "notes edited",
    "notes reformatted only",
    "scalar metadata field",
    "license",
    "methodology",
    "made private or public",
    "organization",
    "tags added",
    "tags removed",
    "groups added",
    "groups removed",
    "customviz",
    "field_names and file_types",
    "resource added",
    "resource deleted",
    "resources reordered",
    "resource url",
    "resource name",
    "resource format",
    "resource description edited",
    "resource description reformatted only",
    "resource size only",
    "resource new data",
    "resource microdata",
    "resource hapi flags",
    "resource type",
    "sheets changed",
];

/// One pair of the corpus.
#[derive(Debug, Clone)]
pub struct VariedPair {
    /// The old dict (`{}` or `null` for a new dataset).
    pub old: Value,
    /// The new dict.
    pub new: Value,
    /// What was changed, entries of [`CHANGE_KINDS`].
    pub changes: Vec<&'static str>,
}

/// The first `count` pairs of the corpus.
pub fn varied_pairs(count: usize) -> Vec<VariedPair> {
    (0..count).map(varied_pair).collect()
}

/// Pair number `index` of the corpus.
pub fn varied_pair(index: usize) -> VariedPair {
    let mut rng = Rng(0x5eed_0000_0000_0000 ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let old = dataset(&mut rng, index);
    let mut new = old.clone();
    let roll = rng.below(100);
    let changes = match roll {
        0..=7 => vec!["no change at all"],
        8..=12 => {
            untracked(&mut rng, &mut new);
            vec!["untracked fields only"]
        }
        13..=17 => {
            let old = if rng.chance(50) {
                json!({})
            } else {
                Value::Null
            };
            return VariedPair {
                old,
                new,
                changes: vec!["dataset created"],
            };
        }
        18..=20 => {
            new["state"] = json!("deleted");
            untracked(&mut rng, &mut new);
            vec!["dataset deleted"]
        }
        _ => {
            let picks = 1 + rng.below(4) + usize::from(rng.chance(10)) * rng.below(6);
            let mut changes: Vec<&'static str> = Vec::new();
            for _ in 0..picks {
                // Kinds after "dataset deleted" in CHANGE_KINDS; resource edits twice as often.
                let kind = if rng.chance(55) {
                    CHANGE_KINDS[19 + rng.below(CHANGE_KINDS.len() - 19)]
                } else {
                    CHANGE_KINDS[4 + rng.below(15)]
                };
                if !changes.contains(&kind) {
                    change(&mut rng, kind, &mut new);
                    changes.push(kind);
                }
            }
            untracked(&mut rng, &mut new);
            changes
        }
    };
    VariedPair { old, new, changes }
}

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn within(&mut self, range: Range<usize>) -> usize {
        range.start + self.below(range.len())
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    fn time(&mut self) -> String {
        format!(
            "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
            18 + self.below(8),
            1 + self.below(12),
            1 + self.below(28),
            self.below(24),
            self.below(60),
            self.below(60),
            self.below(1_000_000)
        )
    }
}

const WORDS: [&str; 48] = [
    "population",
    "displacement",
    "food",
    "security",
    "health",
    "facilities",
    "district",
    "province",
    "households",
    "refugees",
    "returnees",
    "conflict",
    "flood",
    "drought",
    "cholera",
    "vaccination",
    "coverage",
    "estimates",
    "survey",
    "assessment",
    "education",
    "schools",
    "water",
    "sanitation",
    "hygiene",
    "nutrition",
    "admin",
    "boundaries",
    "settlements",
    "camps",
    "funding",
    "requirements",
    "humanitarian",
    "response",
    "plan",
    "monthly",
    "weekly",
    "the",
    "of",
    "and",
    "in",
    "by",
    "for",
    "data",
    "indicators",
    "sex",
    "age",
    "markets",
];

const COUNTRIES: [(&str, &str); 24] = [
    ("afg", "Afghanistan"),
    ("bfa", "Burkina Faso"),
    ("caf", "Central African Republic"),
    ("cod", "Democratic Republic of the Congo"),
    ("col", "Colombia"),
    ("eth", "Ethiopia"),
    ("hti", "Haiti"),
    ("irq", "Iraq"),
    ("ken", "Kenya"),
    ("lbn", "Lebanon"),
    ("mli", "Mali"),
    ("moz", "Mozambique"),
    ("mmr", "Myanmar"),
    ("ner", "Niger"),
    ("nga", "Nigeria"),
    ("pak", "Pakistan"),
    ("pse", "State of Palestine"),
    ("som", "Somalia"),
    ("ssd", "South Sudan"),
    ("sdn", "Sudan"),
    ("syr", "Syrian Arab Republic"),
    ("tcd", "Chad"),
    ("ukr", "Ukraine"),
    ("yem", "Yemen"),
];

const TAGS: [&str; 20] = [
    "affected population",
    "baseline population",
    "cholera",
    "conflict-violence",
    "education",
    "food security",
    "funding",
    "geodata",
    "health",
    "health facilities",
    "hxl",
    "internally displaced persons-idp",
    "livelihoods",
    "nutrition",
    "refugees",
    "sex and age disaggregated data-sadd",
    "subnational",
    "violence and conflict",
    "water sanitation and hygiene-wash",
    "who is doing what and where-3w-4w-5w",
];

const ORGANIZATIONS: [(&str, &str); 8] = [
    ("ocha-fts", "OCHA Financial Tracking Service"),
    ("unhcr", "UNHCR - The UN Refugee Agency"),
    ("wfp", "WFP - World Food Programme"),
    ("who", "World Health Organization"),
    ("iom", "International Organization for Migration (IOM)"),
    ("acled", "ACLED"),
    ("worldpop", "WorldPop"),
    ("reach-initiative", "REACH Initiative"),
];

const FORMATS: [(&str, &str); 8] = [
    ("CSV", "text/csv"),
    (
        "XLSX",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("GeoJSON", "application/geo+json"),
    ("SHP", "application/zip"),
    ("JSON", "application/json"),
    ("PDF", "application/pdf"),
    ("Web App", "text/html"),
    ("Geodatabase", "application/zip"),
];

const FREQUENCIES: [&str; 10] = ["1", "7", "14", "30", "90", "180", "365", "0", "-2", "-1"];

const LICENSES: [&str; 8] = [
    "cc-by",
    "cc-by-igo",
    "cc-by-sa",
    "hdx-multi",
    "hdx-odc-by",
    "hdx-other",
    "hdx-pddl",
    "other-pd-nr",
];

const METHODOLOGIES: [&str; 5] = [
    "Census",
    "Sample Survey",
    "Direct Observational Data/Anecdotal Data",
    "Registry",
    "Other",
];

/// Words, as many as a number drawn from `counts`.
fn words(rng: &mut Rng, counts: Range<usize>) -> String {
    let count = rng.within(counts);
    let mut text = String::new();
    for i in 0..count {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(rng.pick(&WORDS));
    }
    text
}

fn sentence(rng: &mut Rng) -> String {
    let text = words(rng, 5..19);
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or('X');
    format!("{first}{}.", chars.as_str())
}

/// Markdown of about a length drawn from `lengths` (bytes): paragraphs with emphasis and links,
/// sometimes a heading, a list, a quote or inline HTML, as HDX's notes have.
fn markdown(rng: &mut Rng, lengths: Range<usize>) -> String {
    let length = rng.within(lengths);
    let mut text = String::new();
    while text.len() < length {
        match rng.below(18) {
            0 if !text.is_empty() => text.push_str(&format!("\n\n## {}\n\n", words(rng, 3..4))),
            1 => {
                for _ in 0..2 + rng.below(4) {
                    text.push_str(&format!("\n- {}", words(rng, 3..9)));
                }
                text.push_str("\n\n");
            }
            2 => text.push_str(&format!(
                "See [{}](https://data.humdata.org/dataset/{}). ",
                words(rng, 2..3),
                rng.uuid()
            )),
            3 => text.push_str(&format!("**{}** ", sentence(rng))),
            4 => text.push_str(&format!("_{}_ ", sentence(rng))),
            5 => text.push_str(&format!("{}<br/>", sentence(rng))),
            6 => text.push_str("\n\n"),
            // What the plain text must escape, drop or keep: quotes, entities, HTML, code,
            // images, Windows line ends, tabs, non-ASCII and non-breaking spaces.
            7 => text.push_str(&format!("They said \"{}\" & left <3 ", words(rng, 2..5))),
            8 => text.push_str(&format!("<div class=\"note\">{}</div>\n\n", sentence(rng))),
            9 => text.push_str("Côte d'Ivoire\u{a0}– 2024\t(estimates) "),
            10 => text.push_str("`a<b> & c` &amp; &copy; "),
            11 => text.push_str("![a chart](chart.png) "),
            12 => text.push_str(&format!("{}\r\n", sentence(rng))),
            13 => text.push_str(&format!(
                "\n\n1. {}\n2. {}\n\n> {}\n\n",
                words(rng, 2..6),
                words(rng, 2..6),
                sentence(rng)
            )),
            _ => {
                text.push_str(&sentence(rng));
                text.push(' ');
            }
        }
    }
    text.trim().to_string()
}

/// Long-tailed Markdown lengths for notes: mostly a few hundred bytes, sometimes a few KB.
fn notes_lengths(rng: &mut Rng) -> Range<usize> {
    match rng.below(100) {
        0..=44 => 30..280,
        45..=84 => 300..1500,
        _ => 1500..5000,
    }
}

/// How many resources: 1–50, most datasets a handful.
fn resource_count(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=34 => 1 + rng.below(3),
        35..=64 => 4 + rng.below(5),
        65..=84 => 9 + rng.below(8),
        85..=94 => 17 + rng.below(14),
        _ => 31 + rng.below(20),
    }
}

fn organization(rng: &mut Rng) -> Value {
    let (name, title) = rng.pick(&ORGANIZATIONS);
    json!({
        "id": format!("{:08x}-6c41-420c-8c33-e84b277fdc90", name.len() * 7919 + title.len()),
        "name": name, "title": title, "type": "organization",
        "description": format!("{title} shares data on HDX."), "image_url": "",
        "created": "2014-07-14T08:29:25.133079", "is_organization": true,
        "approval_status": "approved", "state": "active"
    })
}

fn group(code: &str, title: &str) -> Value {
    json!({"description": "", "display_name": title, "id": format!("{code}-group-id"),
           "image_display_url": "", "name": code, "title": title})
}

fn tag(name: &str, vocabulary: bool) -> Value {
    let mut tag = json!({"display_name": name, "id": format!("tag-{}", name.len()), "name": name,
                         "state": "active"});
    if vocabulary {
        tag["vocabulary_id"] = json!(TAG_VOCABULARY_ID);
    }
    tag
}

fn sheets(rng: &mut Rng) -> Vec<Value> {
    (0..1 + rng.below(4))
        .map(|s| {
            json!({"name": format!("Sheet{}", s + 1), "is_hidden": false,
                   "nrows": 10 + rng.below(5000), "ncols": 2 + rng.below(30),
                   "has_merged_cells": rng.chance(10), "header_hash": format!("{:016x}", rng.next()),
                   "hashtag_hash": if rng.chance(40) { json!(format!("{:016x}", rng.next())) } else { Value::Null },
                   "hxl_header_hash": Value::Null})
        })
        .collect()
}

fn fs_check(rng: &mut Rng, sheets: &[Value]) -> Value {
    json!({"state": "success", "message": "File structure check completed", "timestamp": rng.time(),
           "hxl_proxy_response": {"format": "XLSX", "sheets": sheets}})
}

fn resource(rng: &mut Rng, dataset_id: &str, position: usize) -> Value {
    let id = rng.uuid();
    let (format, mimetype) = rng.pick(&FORMATS);
    let file = format!(
        "{}-{position}.{}",
        words(rng, 2..3).replace(' ', "_"),
        format.to_lowercase()
    );
    let url =
        format!("https://data.humdata.org/dataset/{dataset_id}/resource/{id}/download/{file}");
    let description = match rng.below(10) {
        0..=2 => String::new(),
        3..=7 => markdown(rng, 20..220),
        _ => markdown(rng, 200..1500),
    };
    let mut r = json!({
        "alt_url": format!("https://data.humdata.org/dataset/{dataset_id}/resource/{id}/download/"),
        "cache_last_updated": null, "cache_url": null, "created": rng.time(),
        "datastore_active": false, "description": description,
        "download_url": url, "format": format, "hash": "",
        "hdx_rel_url": format!("/dataset/{dataset_id}/resource/{id}/download/{file}"),
        "id": id, "last_modified": rng.time(), "metadata_modified": rng.time(),
        "microdata": rng.chance(5), "mimetype": mimetype, "mimetype_inner": null, "name": file,
        "originalHash": rng.next() as i32, "package_id": dataset_id, "pii": "False",
        "position": position,
        "resource_type": if rng.chance(85) { "file.upload" } else { "api" },
        "size": rng.below(50_000_000), "state": "active", "url": url,
        "url_type": "upload", "broken_link": false
    });
    if rng.chance(30) {
        r["in_hapi"] = json!(rng.pick(&["in-data", "no-data", "unknown"]));
    }
    if rng.chance(5) {
        r["qa_hapi_report"] = json!("{\"status\": \"ok\"}");
    }
    if format == "XLSX" || (format == "CSV" && rng.chance(30)) {
        let history: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                let sheets = sheets(rng);
                fs_check(rng, &sheets)
            })
            .collect();
        r["fs_check_info"] = json!(Value::Array(history).to_string());
    }
    if matches!(format, "GeoJSON" | "SHP" | "Geodatabase") {
        r["shape_info"] = json!(
            "[{\"state\": \"success\", \"message\": \"Import successful\", \"bbox\": [1,2,3,4]}]"
                .repeat(1 + rng.below(20))
        );
    }
    r
}

fn dataset(rng: &mut Rng, index: usize) -> Value {
    let id = rng.uuid();
    let title = format!(
        "{} {}",
        sentence(rng).trim_end_matches('.'),
        2000 + index % 26
    );
    let license = rng.pick(&LICENSES);
    let methodology = rng.pick(&METHODOLOGIES);
    let mut groups = Vec::new();
    let group_count = if rng.chance(8) {
        5 + rng.below(20)
    } else {
        rng.below(4)
    };
    for _ in 0..group_count {
        let (code, name) = rng.pick(&COUNTRIES);
        groups.push(group(code, name));
    }
    let mut tags = Vec::new();
    for _ in 0..1 + rng.below(10) {
        tags.push(tag(rng.pick(&TAGS), true));
    }
    if rng.chance(15) {
        tags.push(tag("legacy tag", false));
    }
    let resources: Vec<Value> = (0..resource_count(rng))
        .map(|n| resource(rng, &id, n))
        .collect();
    let org = organization(rng);
    let notes_lengths = notes_lengths(rng);
    let mut d = json!({
        "archived": false, "creator_user_id": rng.uuid(),
        "data_update_frequency": rng.pick(&FREQUENCIES),
        "dataset_date": if rng.chance(30) {
            json!("[2022-03-03T00:00:00 TO *]")
        } else {
            json!(format!("[20{:02}-01-01T00:00:00 TO 2024-12-31T23:59:59]", 10 + rng.below(14)))
        },
        "dataset_preview": rng.pick(&["first_resource", "no_preview", "resource_id"]),
        "dataset_source": format!("{} and partners", org["title"].as_str().unwrap_or("")),
        "due_date": rng.time(), "has_geodata": rng.chance(30), "has_quickcharts": rng.chance(20),
        "has_showcases": rng.chance(10), "id": id, "is_requestdata_type": false, "isopen": true,
        "last_modified": rng.time(), "license_id": license,
        "license_title": "Creative Commons Attribution International",
        "license_url": "http://www.opendefinition.org/licenses/cc-by",
        "maintainer": rng.uuid(), "maintainer_email": null, "metadata_created": rng.time(),
        "metadata_modified": rng.time(), "methodology": methodology,
        "name": format!("{}-{index}", title.to_lowercase().replace(' ', "-")),
        "notes": markdown(rng, notes_lengths), "num_resources": resources.len(),
        "num_tags": tags.len(), "organization": org.clone(),
        "overdue_date": rng.time(), "owner_org": org["id"].clone()
    });
    // Two objects: one would exceed the `json!` macro's recursion limit.
    let rest = json!({
        "package_creator": "hdx-bot", "pageviews_last_14_days": rng.below(5000),
        "private": rng.chance(5), "qa_completed": rng.chance(50), "state": "active",
        "subnational": if rng.chance(50) { "1" } else { "0" }, "title": title,
        "total_res_downloads": rng.below(100_000), "type": "dataset", "url": null,
        "version": null, "groups": groups, "resources": resources, "tags": tags,
        "relationships_as_subject": [], "relationships_as_object": [],
        "is_fresh": rng.chance(70), "update_status": "fresh"
    });
    if let (Some(d), Value::Object(rest)) = (d.as_object_mut(), rest) {
        d.extend(rest);
    }
    if rng.chance(50) {
        d["caveats"] = json!(markdown(rng, 20..420));
    }
    if license == "hdx-other" {
        d["license_other"] = json!(markdown(rng, 40..340));
    }
    if methodology == "Other" {
        d["methodology_other"] = json!(markdown(rng, 40..640));
    }
    if rng.chance(10) {
        d["customviz"] = json!([{"url": format!("https://viz.example.org/{}", rng.uuid())}]);
    }
    if rng.chance(8) {
        d["is_requestdata_type"] = json!(true);
        d["field_names"] = json!("admin1,admin2,population,date");
        d["file_types"] = json!("csv,xlsx");
        d["num_of_rows"] = json!(rng.below(100_000));
    }
    d
}

/// What every CKAN update does: new modification times and counters.
fn untracked(rng: &mut Rng, new: &mut Value) {
    new["metadata_modified"] = json!(rng.time());
    new["pageviews_last_14_days"] = json!(rng.below(5000));
    new["total_res_downloads"] = json!(rng.below(100_000));
}

/// A resource of `new` picked at random, if it has any.
fn some_resource<'a>(rng: &mut Rng, new: &'a mut Value) -> Option<&'a mut Map<String, Value>> {
    let list = new["resources"].as_array_mut()?;
    if list.is_empty() {
        return None;
    }
    let n = rng.below(list.len());
    list[n].as_object_mut()
}

fn change(rng: &mut Rng, kind: &str, new: &mut Value) {
    match kind {
        "title" => {
            new["title"] = json!(format!("{} (updated)", new["title"].as_str().unwrap_or("")))
        }
        "name" => new["name"] = json!(format!("{}-v2", new["name"].as_str().unwrap_or(""))),
        "notes edited" => {
            let notes = new["notes"].as_str().unwrap_or("").to_string();
            new["notes"] = json!(match rng.below(3) {
                0 => format!("{notes}\n\n{}", sentence(rng)),
                1 => notes.replacen("the", "a", 1) + " Updated.",
                _ => markdown(rng, 40..840),
            });
        }
        "notes reformatted only" => {
            let notes = new["notes"].as_str().unwrap_or("").to_string();
            new["notes"] = json!(format!("{}\n\n", notes.replace("**", "__")));
        }
        "scalar metadata field" => {
            let field = rng.pick(&[
                "dataset_source",
                "dataset_date",
                "data_update_frequency",
                "maintainer",
                "caveats",
                "subnational",
                "archived",
                "dataset_preview",
                "num_of_rows",
            ]);
            new[field] = match field {
                "dataset_date" => json!("[2023-01-01T00:00:00 TO *]"),
                "data_update_frequency" => json!(rng.pick(&FREQUENCIES)),
                "caveats" => json!(markdown(rng, 30..330)),
                "subnational" => json!(if new["subnational"] == "1" { "0" } else { "1" }),
                "archived" => json!(true),
                "dataset_preview" => json!("no_preview"),
                "num_of_rows" => json!(rng.below(100_000)),
                _ => json!(format!("{} (revised)", words(rng, 3..4))),
            };
        }
        "license" => {
            new["license_id"] = json!("hdx-other");
            new["license_other"] = json!(markdown(rng, 60..360));
        }
        "methodology" => {
            new["methodology"] = json!("Other");
            new["methodology_other"] = json!(markdown(rng, 60..660));
        }
        "made private or public" => {
            new["private"] = json!(!new["private"].as_bool().unwrap_or(false));
        }
        "organization" => {
            let org = organization(rng);
            new["owner_org"] = org["id"].clone();
            new["organization"] = org;
        }
        "tags added" => {
            for _ in 0..1 + rng.below(3) {
                let name = rng.pick(&TAGS);
                push(new, "tags", tag(name, true));
            }
        }
        "tags removed" => remove_some(rng, new, "tags"),
        "groups added" => {
            for _ in 0..1 + rng.below(3) {
                let (code, name) = rng.pick(&COUNTRIES);
                push(new, "groups", group(code, name));
            }
        }
        "groups removed" => remove_some(rng, new, "groups"),
        "customviz" => {
            new["customviz"] = json!([{"url": format!("https://viz.example.org/{}", rng.uuid())}])
        }
        "field_names and file_types" => {
            new["field_names"] = json!("admin1,population,date,source");
            new["file_types"] = json!(if rng.chance(50) { "csv" } else { "xlsx,csv" });
        }
        "resource added" => {
            let id = new["id"].as_str().unwrap_or("").to_string();
            let count = new["resources"].as_array().map_or(0, Vec::len);
            for n in 0..1 + rng.below(3) {
                let r = resource(rng, &id, count + n);
                push(new, "resources", r);
            }
        }
        "resource deleted" => remove_some(rng, new, "resources"),
        "resources reordered" => {
            if let Some(list) = new["resources"].as_array_mut() {
                list.reverse();
                for (n, r) in list.iter_mut().enumerate() {
                    r["position"] = json!(n);
                }
            }
        }
        _ => resource_change(rng, kind, new),
    }
}

fn resource_change(rng: &mut Rng, kind: &str, new: &mut Value) {
    let time = rng.time();
    let size = rng.below(50_000_000);
    let text = markdown(rng, 20..420);
    let new_sheets = sheets(rng);
    let check = fs_check(rng, &new_sheets);
    let Some(r) = some_resource(rng, new) else {
        return;
    };
    match kind {
        "resource url" => {
            r.insert(
                "url".into(),
                json!(format!("https://example.org/export/{size}.csv")),
            );
        }
        "resource name" => {
            let name = format!("renamed-{}", r["name"].as_str().unwrap_or(""));
            r.insert("name".into(), json!(name));
        }
        "resource format" => {
            r.insert("format".into(), json!("XLSX"));
        }
        "resource description edited" => {
            r.insert("description".into(), json!(text));
        }
        "resource description reformatted only" => {
            let description = r["description"].as_str().unwrap_or("").to_string();
            r.insert("description".into(), json!(format!("  {description}\n")));
        }
        "resource size only" => {
            r.insert("size".into(), json!(size));
        }
        "resource new data" => {
            r.insert("last_modified".into(), json!(time));
            r.insert("size".into(), json!(size));
            r.insert("hash".into(), json!(format!("{size:x}")));
        }
        "resource microdata" => {
            let microdata = !r["microdata"].as_bool().unwrap_or(false);
            r.insert("microdata".into(), json!(microdata));
        }
        "resource hapi flags" => {
            r.insert("in_hapi".into(), json!("in-data"));
        }
        "resource type" => {
            r.insert("resource_type".into(), json!("api"));
        }
        "sheets changed" => {
            let mut history: Vec<Value> = r
                .get("fs_check_info")
                .and_then(Value::as_str)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default();
            if history.is_empty() {
                history.push(check.clone());
            }
            history.push(check);
            r.insert(
                "fs_check_info".into(),
                json!(Value::Array(history).to_string()),
            );
            r.insert("last_modified".into(), json!(time));
        }
        other => panic!("unknown change kind {other:?}"),
    }
}

fn push(new: &mut Value, field: &str, item: Value) {
    match new[field].as_array_mut() {
        Some(list) => list.push(item),
        None => new[field] = json!([item]),
    }
}

fn remove_some(rng: &mut Rng, new: &mut Value, field: &str) {
    if let Some(list) = new[field].as_array_mut() {
        for _ in 0..1 + rng.below(2) {
            if !list.is_empty() {
                let n = rng.below(list.len());
                list.remove(n);
            }
        }
    }
}

//! What an import child is asked and what it answers ([`ImportRequest`], [`ImportReport`]), and
//! the old service's repair rules ([`Fix`], [`next_fix`]): the data of the protocol in
//! [`super::child`], without GDAL. The GDAL side (`GDALVectorTranslate` with COPY, the captured
//! messages, the attempts with the rules) is the `hdx-jobs-import` crate, linked only into the
//! `hdx-jobs-import` executable that the worker spawns, so `hdx-jobs` never loads libgdal.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the child is asked to do.
#[derive(Clone, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The downloaded (or local) file: imported as it is, or unpacked first when it is a zip or
    /// a KMZ.
    pub source: PathBuf,
    /// The job's folder: archives unpack into `<work_dir>/zip`.
    pub work_dir: PathBuf,
    /// What an archive may unpack to.
    pub archive: super::archive::ArchiveLimits,
    /// The schema of the staging table.
    pub schema: String,
    /// The staging table (created, or replaced).
    pub table: String,
    /// libpq `key=value` connection string of the layer database (has the password).
    pub conninfo: String,
}

impl std::fmt::Debug for ImportRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportRequest")
            .field("source", &self.source)
            .field("work_dir", &self.work_dir)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("conninfo", &"***")
            .finish()
    }
}

/// The old service's repair rules (docs/hdx-contract.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fix {
    /// "does not match column type (LineString)" → `-nlt MultiLineString`.
    MultiLineString,
    /// "does not match column type (Polygon)" → `-nlt MultiPolygon`.
    MultiPolygon,
    /// "Can't transform coordinates, source layer has no" → `-s_srs EPSG:4326`.
    SourceSrs,
    /// "invalid byte sequence for encoding" (with COPY: "Non UTF-8 content found") →
    /// client encoding latin1.
    Latin1,
}

impl Fix {
    /// The old service's order of trying them.
    pub const ORDER: [Fix; 4] = [
        Fix::MultiLineString,
        Fix::MultiPolygon,
        Fix::SourceSrs,
        Fix::Latin1,
    ];

    /// Texts in GDAL's output that call for this fix (any of them).
    pub fn triggers(self) -> &'static [&'static str] {
        match self {
            Fix::MultiLineString => &["does not match column type (LineString)"],
            Fix::MultiPolygon => &["does not match column type (Polygon)"],
            Fix::SourceSrs => &["Can't transform coordinates, source layer has no"],
            Fix::Latin1 => &[
                "invalid byte sequence for encoding",
                "Non UTF-8 content found",
            ],
        }
    }

    /// The option the fix sets; a second fix on the same option is never added (as before).
    pub fn key(self) -> &'static str {
        match self {
            Fix::MultiLineString | Fix::MultiPolygon => "-nlt",
            Fix::SourceSrs => "-s_srs",
            Fix::Latin1 => "PGCLIENTENCODING",
        }
    }

    /// The import options (ogr2ogr's) the fix adds; none for latin1, which the import sets as
    /// a config option and a libpq setting instead.
    pub fn argv(self) -> &'static [&'static str] {
        match self {
            Fix::MultiLineString => &["-nlt", "MultiLineString"],
            Fix::MultiPolygon => &["-nlt", "MultiPolygon"],
            Fix::SourceSrs => &["-s_srs", "EPSG:4326"],
            Fix::Latin1 => &[],
        }
    }
}

/// The first rule, in [`Fix::ORDER`], whose trigger is in `output` and whose option is not set
/// yet.
pub fn next_fix(output: &str, applied: &[Fix]) -> Option<Fix> {
    Fix::ORDER.into_iter().find(|fix| {
        !applied.iter().any(|a| a.key() == fix.key())
            && fix.triggers().iter().any(|t| output.contains(t))
    })
}

/// One translation attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The fixes it ran with.
    pub fixes: Vec<Fix>,
    /// Whether it succeeded.
    pub ok: bool,
    /// GDAL's warnings and errors, in order (may contain connection details: scrub before
    /// showing).
    pub messages: Vec<String>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The last attempt succeeded.
    pub ok: bool,
    /// The fixes of the last attempt.
    pub fixes: Vec<Fix>,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// Features in the source as its driver counts them without reading everything (`None`
    /// when that would cost a full read).
    pub source_features: Option<u64>,
    /// Why the archive could not be unpacked (nothing was imported then).
    #[serde(default)]
    pub unpack_failure: Option<super::failure::Failure>,
    /// Whether the native GeoJSON reader (the child's fast path) imported the file instead of
    /// GDAL, or why it left the file to GDAL.
    #[serde(default)]
    pub native_geojson: NativeGeojson,
}

/// What the import child's native GeoJSON reader did with a file (docs/ARCHITECTURE.md,
/// "Geopreview's native GeoJSON import"): the table it writes is the one GDAL would write, so
/// nothing after the import depends on this; it is there for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NativeGeojson {
    /// Not tried: the file is not `.geojson` or `.json` (or the report is from a child
    /// without the native reader). GDAL imported it.
    #[default]
    NotTried,
    /// The native reader imported the file; GDAL did not run.
    Imported,
    /// The native reader left the file to GDAL, for this reason: something it does not
    /// reproduce exactly (decided before writing), or PostgreSQL refused its rows (rolled back).
    Declined {
        /// Why.
        reason: String,
    },
}

impl ImportReport {
    /// The report of an archive that could not be unpacked.
    pub fn unpack_failed(failure: super::failure::Failure) -> Self {
        ImportReport {
            ok: false,
            fixes: Vec::new(),
            attempts: Vec::new(),
            source_features: None,
            unpack_failure: Some(failure),
            native_geojson: NativeGeojson::NotTried,
        }
    }

    /// The messages of the last attempt, one per line.
    pub fn last_messages(&self) -> String {
        self.attempts
            .last()
            .map(|a| a.messages.join("\n"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_rules_apply_in_the_old_order_one_option_at_a_time() {
        let both = "ERROR: Geometry type (MultiPolygon) does not match column type (Polygon)\n\
                    ERROR: Geometry type (MultiLineString) does not match column type (LineString)";
        assert_eq!(next_fix(both, &[]), Some(Fix::MultiLineString));
        assert_eq!(
            next_fix(both, &[Fix::MultiLineString]),
            None,
            "one -nlt only"
        );
        let srs = "ERROR 1: Can't transform coordinates, source layer has no\ncoordinate system.";
        assert_eq!(next_fix(srs, &[Fix::MultiPolygon]), Some(Fix::SourceSrs));
        assert_eq!(next_fix(srs, &[Fix::SourceSrs]), None);
        let copy_latin1 = "ERROR 1: Non UTF-8 content found when writing feature -1 of layer x";
        assert_eq!(next_fix(copy_latin1, &[]), Some(Fix::Latin1));
        assert_eq!(
            next_fix(
                "ERROR: invalid byte sequence for encoding \"UTF8\": 0xe3",
                &[]
            ),
            Some(Fix::Latin1)
        );
        assert_eq!(next_fix(copy_latin1, &[Fix::Latin1]), None);
        assert_eq!(next_fix("Unable to open datasource", &[]), None);
    }

    #[test]
    fn requests_hide_the_connection_string() {
        let request = ImportRequest {
            source: "/tmp/x.geojson".into(),
            work_dir: "/tmp".into(),
            archive: super::super::archive::ArchiveLimits {
                max_bytes: 1,
                max_entries: 1,
            },
            schema: "public".into(),
            table: "t".into(),
            conninfo: "password='hunter2'".into(),
        };
        assert!(!format!("{request:?}").contains("hunter2"));
    }
}

//! The native GeoJSON import: geopreview's fast path for the common HDX file, a GeoJSON
//! FeatureCollection of simple 2D geometries with string, number and boolean properties.
//!
//! Why: GDAL's GeoJSON reading is most of an import's time. This module reads the file itself
//! (a scanner finds each feature's bytes, serde_json parses them) and writes PostgreSQL's
//! binary COPY into the same staging table that GDAL's ogr2ogr code would make (same columns,
//! types, values, NULLs, geometries, `ogc_fid`s and sequence), so the caller's steps after the
//! import (index, ANALYZE, bounding box, fields, swap) see no difference.
//!
//! How: two passes over the file, each in constant memory (`read`: one feature at a time).
//! Pass 1 infers the table as GDAL would (`schema`) and decides whether the result would be
//! exactly GDAL's; anything it does not reproduce (see `schema` and `geometry`: another
//! `crs`, 3D coordinates, empty geometries, nested properties, mixed value types, date-like
//! strings other than plain dates, ambiguous property orders, odd names, invalid UTF-8, ...)
//! declines with a reason *before anything is written*, and the import runs GDAL instead.
//! Pass 2 drops and creates the table and COPYs the rows, in one transaction: if PostgreSQL
//! refuses anything the transaction rolls back and GDAL runs too (its `-overwrite` replaces
//! the table anyway).
//!
//! `hdx-jobs-import/tests/geojson_fast_path.rs` imports a corpus of files both ways and
//! compares the tables row by row; it is what keeps these rules equal to GDAL's.

mod geometry;
mod read;
mod schema;

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use hdx_jobs::geo::import::ImportRequest;

use read::{FeatureBuf, FeatureId, Keys};
use schema::{Plan, Survey};

/// Read buffer of both passes.
const READ_BUFFER: usize = 256 * 1024;
/// COPY data is sent in chunks of about this size.
const COPY_BUFFER: usize = 256 * 1024;
/// Progress is reported every this many features.
const PROGRESS_EVERY: u64 = 1024;
/// The share of the progress given to pass 1 (reading only; pass 2 also writes).
const SURVEY_SHARE: f64 = 0.25;

/// Whether the native import is tried on `source`: a `.geojson` or `.json` file. Its content
/// decides the rest (a FeatureCollection; ESRIJSON and TopoJSON are declined in pass 1).
pub fn applies(source: &Path) -> bool {
    source
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("geojson") || e.eq_ignore_ascii_case("json"))
}

/// Imports `source` into the request's staging table; returns the number of features, or the
/// reason the file is left to GDAL (nothing is left in the database then).
pub fn import(
    request: &ImportRequest,
    source: &Path,
    progress: &mut dyn FnMut(f64),
) -> Result<u64, String> {
    let mut keys = Keys::default();
    let plan = survey(request, source, &mut keys, progress).map_err(shortened)?;
    write_table(request, source, &plan, &mut keys, progress).map_err(shortened)?;
    progress(1.0);
    Ok(plan.features)
}

/// Longest reason kept: reasons quote the file (names, values), which may be huge.
const MAX_REASON_CHARS: usize = 300;

/// `reason`, cut to [`MAX_REASON_CHARS`] characters.
fn shortened(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason,
    }
}

/// Counts the bytes read, for progress.
struct Counting<'a, R> {
    inner: R,
    read: &'a Cell<u64>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Pass 1: the table GDAL would make, or why the native import declines.
fn survey(
    request: &ImportRequest,
    source: &Path,
    keys: &mut Keys,
    progress: &mut dyn FnMut(f64),
) -> Result<Plan, String> {
    let file = File::open(source).map_err(|e| format!("cannot open the file: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?
        .len()
        .max(1) as f64;
    let read = Cell::new(0);
    let reader = BufReader::with_capacity(
        READ_BUFFER,
        Counting {
            inner: file,
            read: &read,
        },
    );
    let mut survey = Survey::default();
    let mut on_feature = |feature: &FeatureBuf, keys: &Keys| {
        survey.feature(feature, keys)?;
        if survey.features().is_multiple_of(PROGRESS_EVERY) {
            progress(SURVEY_SHARE * read.get() as f64 / size);
        }
        Ok(())
    };
    read::read_collection(reader, keys, &mut on_feature)?;
    survey.plan(keys, &request.table)
}

/// Pass 2: the table, dropped, created and filled in one transaction. An error rolls it back.
fn write_table(
    request: &ImportRequest,
    source: &Path,
    plan: &Plan,
    keys: &mut Keys,
    progress: &mut dyn FnMut(f64),
) -> Result<(), String> {
    let mut client = postgres::Client::connect(&request.conninfo, postgres::NoTls)
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    let refused = |what: &str, e: postgres::Error| format!("PostgreSQL refused {what}: {e}");
    let mut transaction = client
        .transaction()
        .map_err(|e| refused("a transaction", e))?;
    let table = format!(
        "{}.{}",
        quote_ident(&request.schema),
        quote_ident(&request.table)
    );
    transaction
        .batch_execute(&create_table_sql(&table, plan))
        .map_err(|e| refused("the table", e))?;

    let file = File::open(source).map_err(|e| format!("cannot open the file: {e}"))?;
    let reader = BufReader::with_capacity(READ_BUFFER, file);
    let copy = format!("COPY {table} FROM STDIN WITH (FORMAT binary)");
    let writer = transaction
        .copy_in(&copy)
        .map_err(|e| refused("the COPY", e))?;
    let mut writer = BufWriter::with_capacity(COPY_BUFFER, writer);
    writer
        .write_all(COPY_HEADER)
        .map_err(|e| format!("COPY failed: {e}"))?;
    let mut row = Vec::new();
    let mut scratch = String::new();
    let mut written: u64 = 0;
    let mut on_feature = |feature: &FeatureBuf, _: &Keys| {
        written += 1;
        let fid = i32::try_from(written)
            .ok()
            .filter(|_| written <= plan.features)
            .ok_or_else(|| "more features than in pass 1 (the file changed)".to_string())?;
        row.clear();
        put_row(&mut row, fid, plan, feature, &mut scratch)?;
        writer
            .write_all(&row)
            .map_err(|e| format!("COPY failed: {e}"))?;
        if written.is_multiple_of(PROGRESS_EVERY) {
            progress(SURVEY_SHARE + (1.0 - SURVEY_SHARE) * written as f64 / plan.features as f64);
        }
        Ok(())
    };
    read::read_collection(reader, keys, &mut on_feature)?;
    if written != plan.features {
        return Err("fewer features than in pass 1 (the file changed)".into());
    }
    writer
        .write_all(&(-1i16).to_be_bytes())
        .map_err(|e| format!("COPY failed: {e}"))?;
    writer
        .into_inner()
        .map_err(|e| format!("COPY failed: {}", e.error()))?
        .finish()
        .map_err(|e| refused("the rows", e))?;
    if plan.features > 0 {
        // The sequence where GDAL leaves it: after the last ogc_fid.
        let features = i64::try_from(plan.features).unwrap_or(i64::MAX);
        transaction
            .execute(
                "SELECT setval(pg_get_serial_sequence($1, 'ogc_fid'), $2)",
                &[&table, &features],
            )
            .map_err(|e| refused("the sequence", e))?;
    }
    transaction.commit().map_err(|e| refused("the commit", e))
}

/// Drops the table and creates it as GDAL does (`ogc_fid` serial primary key, the columns,
/// `wkb_geometry` last; no spatial index: the caller builds it).
fn create_table_sql(table: &str, plan: &Plan) -> String {
    let mut columns = vec!["ogc_fid serial".to_string()];
    if plan.id_column {
        columns.push("id character varying".into());
    }
    for column in &plan.columns {
        columns.push(format!(
            "{} {}",
            quote_ident(&column.name),
            column.kind.sql()
        ));
    }
    columns.push(format!("wkb_geometry {}", plan.geometry_type));
    columns.push("PRIMARY KEY (ogc_fid)".into());
    format!(
        "DROP TABLE IF EXISTS {table} CASCADE;\nCREATE TABLE {table} ({});",
        columns.join(", ")
    )
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The header of PostgreSQL's binary COPY format: signature, flags, no extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// One feature as a binary COPY row: `ogc_fid`, the string id, the properties, the geometry.
fn put_row(
    row: &mut Vec<u8>,
    fid: i32,
    plan: &Plan,
    feature: &FeatureBuf,
    scratch: &mut String,
) -> Result<(), String> {
    let fields = 2 + usize::from(plan.id_column) + plan.columns.len();
    let fields =
        i16::try_from(fields).map_err(|_| "too many properties for one row".to_string())?;
    row.extend_from_slice(&fields.to_be_bytes());
    row.extend_from_slice(&4i32.to_be_bytes());
    row.extend_from_slice(&fid.to_be_bytes());
    if plan.id_column {
        match &feature.id {
            FeatureId::Str(range) => schema::put_text(row, feature.str(range)),
            _ => return Err("a feature without a string id".into()),
        }
    }
    let mut properties = feature.properties.iter().peekable();
    for (index, column) in plan.columns.iter().enumerate() {
        match properties.next_if(|(key, _)| *key as usize == index) {
            Some((_, value)) => schema::put_value(row, column.kind, value, feature, scratch)?,
            None => row.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    if properties.next().is_some() {
        return Err("properties unlike pass 1's (the file changed)".into());
    }
    if feature.geometry.is_some() {
        let len =
            i32::try_from(feature.ewkb.len()).map_err(|_| "a geometry over 2 GB".to_string())?;
        row.extend_from_slice(&len.to_be_bytes());
        row.extend_from_slice(&feature.ewkb);
    } else {
        row.extend_from_slice(&(-1i32).to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(shortened("short".into()), "short");
        let long = shortened("é".repeat(1000));
        assert_eq!(long.chars().count(), MAX_REASON_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}

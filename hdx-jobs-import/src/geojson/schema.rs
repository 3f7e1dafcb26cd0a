//! The table GDAL 3.6 would make of a GeoJSON layer with the import's options, inferred in the
//! first pass ([`Survey`]) and decided before any row is written ([`Plan`]); and the values of
//! a row in PostgreSQL's binary COPY form ([`put_value`]).
//!
//! GDAL's rules, as measured with `ogr2ogr -f PostgreSQL ... -fieldTypeToString Real` and
//! reproduced here:
//! - columns: `ogc_fid` (serial primary key, 1 to n in file order; GeoJSON `id`s are not
//!   kept as FIDs), a `character varying` `id` when features carry string ids, the properties
//!   in order of first appearance, then `wkb_geometry`;
//! - names laundered: ASCII lower-cased, `-`, `'` and `#` made `_`;
//! - types: integers within 32 bits → `integer`, within 64 → `bigint`, booleans → `boolean`,
//!   any float in the field → Real, written as `character varying` in `printf("%.16g")` form,
//!   strings → `character varying`, strings that are all `YYYY-MM-DD` dates → `date`, a
//!   field of nulls only → `character varying`.
//!
//! What GDAL does otherwise or that was not measured is refused with a reason: fields mixing
//! strings with numbers or booleans with anything, strings GDAL may read as other dates, times
//! or date-times, property orders GDAL would rearrange, integer ids beyond 32 bits, string ids
//! on some features only, names that are not plain ASCII or collide once laundered.

use super::geometry::LayerGeometry;
use super::read::{FeatureBuf, FeatureId, Keys, Scalar};

/// The type of a property column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `boolean`.
    Boolean,
    /// `integer`.
    Integer,
    /// `bigint`.
    Integer64,
    /// A Real field turned to text by `-fieldTypeToString Real`: `character varying`.
    RealAsText,
    /// `character varying`.
    Text,
    /// `date`.
    Date,
}

impl ColumnType {
    /// The column's SQL type.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Integer => "integer",
            ColumnType::Integer64 => "bigint",
            ColumnType::RealAsText | ColumnType::Text => "character varying",
            ColumnType::Date => "date",
        }
    }
}

/// A property column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The laundered name.
    pub name: String,
    /// Its type.
    pub kind: ColumnType,
}

/// The table to create: what pass 1 decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// A `character varying` `id` column (features with string ids) after `ogc_fid`.
    pub id_column: bool,
    /// The property columns, by key index.
    pub columns: Vec<Column>,
    /// The geometry column's type, e.g. `geometry(Point,4326)`.
    pub geometry_type: String,
    /// Features in the file.
    pub features: u64,
}

/// What a field's values so far make of its type (GDAL's GeoJSON type inference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Inferred {
    /// Only nulls (or absent) so far.
    #[default]
    Nulls,
    Boolean,
    Integer,
    Integer64,
    Real,
    Text,
    Date,
}

impl Inferred {
    /// The type after one more value, or why the native import cannot reproduce GDAL's.
    fn with(self, value: &Scalar, feature: &FeatureBuf) -> Result<Inferred, &'static str> {
        use Inferred::*;
        let new = match value {
            Scalar::Null => return Ok(self),
            Scalar::Bool(_) => Boolean,
            Scalar::Int(v) if i32::try_from(*v).is_ok() => Integer,
            Scalar::Int(_) => Integer64,
            Scalar::Float(_) => Real,
            Scalar::Str(range) => {
                let text = feature.str(range);
                if date_days(text).is_some() {
                    Date
                } else if may_be_temporal(text) {
                    return Err("a string GDAL may read as a date, time or date-time");
                } else {
                    Text
                }
            }
        };
        Ok(match (self, new) {
            (Nulls, new) => new,
            (old, new) if old == new => old,
            (Integer | Integer64, Integer | Integer64) => Integer64,
            (Integer | Integer64 | Real, Integer | Integer64 | Real) => Real,
            (Text | Date, Text | Date) => Text,
            _ => return Err("a property mixing value types"),
        })
    }

    fn column_type(self) -> ColumnType {
        match self {
            Inferred::Boolean => ColumnType::Boolean,
            Inferred::Integer => ColumnType::Integer,
            Inferred::Integer64 => ColumnType::Integer64,
            Inferred::Real => ColumnType::RealAsText,
            Inferred::Nulls | Inferred::Text => ColumnType::Text,
            Inferred::Date => ColumnType::Date,
        }
    }
}

/// Pass 1: the features seen so far and what they make of the table.
#[derive(Debug, Default)]
pub struct Survey {
    fields: Vec<Inferred>,
    layer: LayerGeometry,
    string_ids: u64,
    features: u64,
}

impl Survey {
    /// Takes one more feature into account.
    pub fn feature(&mut self, feature: &FeatureBuf, keys: &Keys) -> Result<(), String> {
        check_property_order(feature, self.fields.len())?;
        self.fields.resize(keys.names().len(), Inferred::Nulls);
        for (key, value) in &feature.properties {
            let field = &mut self.fields[*key as usize];
            *field = field.with(value, feature).map_err(|reason| {
                format!("{reason} (property {:?})", keys.names()[*key as usize])
            })?;
        }
        match &feature.id {
            FeatureId::Absent => {}
            FeatureId::Int(id) if (0..=i64::from(i32::MAX)).contains(id) => {}
            FeatureId::Int(id) => {
                return Err(format!(
                    "a feature id ({id}) outside 0..2^31 (GDAL makes ogc_fid a bigint)"
                ))
            }
            FeatureId::Str(_) => self.string_ids += 1,
        }
        if let Some(kind) = feature.geometry {
            self.layer = self.layer.with(kind);
        }
        self.features += 1;
        Ok(())
    }

    /// Features seen so far.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The table, once every feature has been seen; `table` is the staging table's name.
    pub fn plan(self, keys: &Keys, table: &str) -> Result<Plan, String> {
        if launder(table).as_deref() != Ok(table) {
            return Err(format!("a table name GDAL would launder: {table:?}"));
        }
        if i32::try_from(self.features).is_err() {
            return Err("more features than a serial ogc_fid holds".into());
        }
        let id_column = self.string_ids > 0;
        if id_column && self.string_ids != self.features {
            return Err("string ids on some features only".into());
        }
        let mut taken: Vec<String> = vec!["ogc_fid".into(), "wkb_geometry".into()];
        if id_column {
            taken.push("id".into());
        }
        let mut columns = Vec::with_capacity(self.fields.len());
        for (name, inferred) in keys.names().iter().zip(&self.fields) {
            let laundered = launder(name)?;
            if taken.contains(&laundered) {
                return Err(format!(
                    "a property name that collides once laundered: {name:?}"
                ));
            }
            taken.push(laundered.clone());
            columns.push(Column {
                name: laundered,
                kind: inferred.column_type(),
            });
        }
        Ok(Plan {
            id_column,
            columns,
            geometry_type: self.layer.column_type(),
            features: self.features,
        })
    }
}

/// Checks that the feature's property keys (indices in order of first appearance; `known`
/// were known before this feature) leave GDAL's field order equal to the order of first
/// appearance. GDAL orders fields by a graph of "comes after" relations between the keys of
/// each feature; that order is the first-appearance order when every feature lists its keys
/// in that order and a feature bringing new keys lists every known key before them.
fn check_property_order(feature: &FeatureBuf, known: usize) -> Result<(), String> {
    let mut previous: Option<u32> = None;
    for (position, (key, _)) in feature.properties.iter().enumerate() {
        if previous.is_some_and(|p| *key <= p) {
            let earlier = &feature.properties[..position];
            return Err(if earlier.iter().any(|(k, _)| k == key) {
                "a duplicate property name".into()
            } else {
                "properties in another order than in earlier features".into()
            });
        }
        if *key as usize >= known && position < known {
            return Err("new properties in a feature that lacks earlier ones".into());
        }
        previous = Some(*key);
    }
    Ok(())
}

/// GDAL's PostgreSQL laundering of a field name, for the names it is known for: printable
/// ASCII letters, digits, space, `_` and `.` (lower-cased), and `-`, `'`, `#` (made `_`), at
/// most 63 bytes. Other names are refused.
pub fn launder(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("a property name of {} bytes", name.len()));
    }
    name.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | ' ' | '.' => Ok(c.to_ascii_lowercase()),
            '-' | '\'' | '#' => Ok('_'),
            _ => Err(format!("a property name with {c:?}: {name:?}")),
        })
        .collect()
}

/// Days since 2000-01-01 of a `YYYY-MM-DD` calendar date (PostgreSQL's binary `date`), or
/// `None` for any other string.
pub fn date_days(text: &str) -> Option<i32> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year == 0 || day == 0 || day > days_in_month {
        return None;
    }
    // Days from civil (proleptic Gregorian), shifted to PostgreSQL's epoch.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let unix_days = era * 146_097 + day_of_era - 719_468;
    i32::try_from(unix_days - 10_957).ok()
}

/// Whether GDAL's date parser (`OGRParseDate`, which the GeoJSON reader tries on every
/// string) might accept `text`: after spaces, a digit or a sign with a date or time separator
/// somewhere, or an ISO 8601 `T` and a digit. A superset, so that a string GDAL would type
/// otherwise is never taken for text.
pub fn may_be_temporal(text: &str) -> bool {
    let trimmed = text.trim_start_matches(' ');
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => trimmed.contains(['-', '/', ':']),
        Some('T') => chars.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// `value` as C's `printf("%.16g")` writes it, which is how GDAL turns a Real into a string
/// (`OGRFeature::SetField(double)` on a String field); `out` is cleared first. Rust's float
/// formatting is exact, as glibc's is, so both round the same way.
pub fn format_real(value: f64, out: &mut String) {
    use std::fmt::Write;
    const PRECISION: i32 = 16;
    out.clear();
    let _ = write!(out, "{:.*e}", (PRECISION - 1) as usize, value);
    let exponent = out
        .rsplit_once('e')
        .and_then(|(_, e)| e.parse::<i32>().ok())
        .unwrap_or(0);
    if (-4..PRECISION).contains(&exponent) {
        out.clear();
        let decimals = (PRECISION - 1 - exponent) as usize;
        let _ = write!(out, "{value:.decimals$}");
        trim_fraction(out);
    } else {
        let e_at = out.rfind('e').unwrap_or(out.len());
        out.truncate(e_at);
        trim_fraction(out);
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.abs());
    }
}

/// Drops the trailing zeros of a fraction, and its point when nothing is left after it.
fn trim_fraction(number: &mut String) {
    if number.contains('.') {
        let kept = number.trim_end_matches('0').trim_end_matches('.').len();
        number.truncate(kept);
    }
}

/// Appends one field of a binary COPY row: `value` as a `kind` column (its length, then its
/// bytes; -1 for NULL). The error says why the value does not fit (the file changed since
/// pass 1).
pub fn put_value(
    row: &mut Vec<u8>,
    kind: ColumnType,
    value: &Scalar,
    feature: &FeatureBuf,
    scratch: &mut String,
) -> Result<(), String> {
    match (kind, value) {
        (_, Scalar::Null) => row.extend_from_slice(&(-1i32).to_be_bytes()),
        (ColumnType::Boolean, Scalar::Bool(v)) => {
            row.extend_from_slice(&1i32.to_be_bytes());
            row.push(u8::from(*v));
        }
        (ColumnType::Integer, Scalar::Int(v)) => {
            let v = i32::try_from(*v).map_err(|_| "an integer beyond 32 bits".to_string())?;
            row.extend_from_slice(&4i32.to_be_bytes());
            row.extend_from_slice(&v.to_be_bytes());
        }
        (ColumnType::Integer64, Scalar::Int(v)) => {
            row.extend_from_slice(&8i32.to_be_bytes());
            row.extend_from_slice(&v.to_be_bytes());
        }
        (ColumnType::RealAsText, Scalar::Int(v)) => {
            format_real(*v as f64, scratch);
            put_text(row, scratch);
        }
        (ColumnType::RealAsText, Scalar::Float(v)) => {
            format_real(*v, scratch);
            put_text(row, scratch);
        }
        (ColumnType::Text, Scalar::Str(range)) => put_text(row, feature.str(range)),
        (ColumnType::Date, Scalar::Str(range)) => {
            let days = date_days(feature.str(range))
                .ok_or_else(|| "a date column with a value that is not a date".to_string())?;
            row.extend_from_slice(&4i32.to_be_bytes());
            row.extend_from_slice(&days.to_be_bytes());
        }
        _ => {
            return Err(format!(
                "a value that does not fit its {} column",
                kind.sql()
            ))
        }
    }
    Ok(())
}

/// Appends a text field (length, then UTF-8 bytes).
pub fn put_text(row: &mut Vec<u8>, text: &str) {
    row.extend_from_slice(&(text.len() as i32).to_be_bytes());
    row.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(value: f64) -> String {
        let mut out = String::new();
        format_real(value, &mut out);
        out
    }

    #[test]
    fn reals_are_written_as_printf_16g() {
        // Each pair as GDAL 3.6 wrote it into the table (and `printf '%.16g'` prints it).
        let cases = [
            (0.1, "0.1"),
            (1.5, "1.5"),
            (13.0, "13"),
            (1e-7, "1e-07"),
            (1e21, "1e+21"),
            (1e15, "1000000000000000"),
            (1e16, "1e+16"),
            (123_456_789_012_345_680.0, "1.234567890123457e+17"),
            (0.300_000_000_000_000_04, "0.3"),
            (std::f64::consts::PI, "3.141592653589793"),
            (-0.0, "-0"),
            (2.5e-300, "2.5e-300"),
            (f64::MAX, "1.797693134862316e+308"),
            (100.0, "100"),
            (12_345_678.9, "12345678.9"),
            (0.000_123, "0.000123"),
            (0.000_012_3, "1.23e-05"),
            (1_234_567_890_123.45, "1234567890123.45"),
            (5e-324, "4.940656458412465e-324"),
            (9_007_199_254_740_993.0, "9007199254740992"),
            (123_456.789_012_345_68, "123456.7890123457"),
            (1_125_899_906_842_624.5, "1125899906842624"),
            (-42.25, "-42.25"),
        ];
        for (value, expected) in cases {
            assert_eq!(real(value), expected, "{value:e}");
        }
    }

    #[test]
    fn field_types_follow_gdal_inference() {
        let mut feature = FeatureBuf::default();
        feature.text.push_str("2024-01-02hello10:11");
        let date = Scalar::Str(0..10);
        let text = Scalar::Str(10..15);
        let time = Scalar::Str(15..20);
        let infer = |values: &[Scalar]| -> Result<ColumnType, &'static str> {
            values
                .iter()
                .try_fold(Inferred::Nulls, |t, v| t.with(v, &feature))
                .map(Inferred::column_type)
        };
        assert_eq!(
            infer(&[Scalar::Int(1), Scalar::Null]),
            Ok(ColumnType::Integer)
        );
        assert_eq!(
            infer(&[Scalar::Int(1), Scalar::Int(3_000_000_000)]),
            Ok(ColumnType::Integer64)
        );
        assert_eq!(
            infer(&[Scalar::Int(1), Scalar::Float(1.5)]),
            Ok(ColumnType::RealAsText)
        );
        assert_eq!(infer(&[Scalar::Bool(true)]), Ok(ColumnType::Boolean));
        assert_eq!(infer(&[Scalar::Null]), Ok(ColumnType::Text));
        assert_eq!(infer(std::slice::from_ref(&date)), Ok(ColumnType::Date));
        assert_eq!(infer(&[date.clone(), text.clone()]), Ok(ColumnType::Text));
        assert_eq!(infer(&[text.clone(), date]), Ok(ColumnType::Text));
        assert!(infer(&[time]).is_err(), "times are GDAL's");
        assert!(infer(&[Scalar::Int(1), text.clone()]).is_err());
        assert!(infer(&[Scalar::Bool(true), Scalar::Int(1)]).is_err());
    }

    #[test]
    fn dates_and_things_that_may_be_dates() {
        assert_eq!(date_days("2000-01-01"), Some(0));
        assert_eq!(date_days("2024-01-02"), Some(8767));
        assert_eq!(date_days("1999-12-31"), Some(-1));
        assert_eq!(date_days("2024-02-29"), Some(8825));
        assert_eq!(date_days("2023-02-29"), None);
        assert_eq!(date_days("2024-13-01"), None);
        assert_eq!(date_days("2024-1-2"), None);
        assert_eq!(date_days("2024-01-02 "), None);
        for temporal in [
            "2024-1-2",
            "2024/01/02",
            "10:11:12",
            " 2024-01-02T10:00Z",
            "-5-3",
        ] {
            assert!(may_be_temporal(temporal), "{temporal}");
        }
        for text in ["MZ-01", "hello", "12", "site 3", "", "\t1-2", "Tana", "T"] {
            assert!(!may_be_temporal(text), "{text}");
        }
    }

    #[test]
    fn names_are_laundered_like_gdal_or_refused() {
        assert_eq!(launder("Name").as_deref(), Ok("name"));
        assert_eq!(launder("A-b").as_deref(), Ok("a_b"));
        assert_eq!(launder("x#y").as_deref(), Ok("x_y"));
        assert_eq!(launder("it's").as_deref(), Ok("it_s"));
        assert_eq!(launder("Has Space.1").as_deref(), Ok("has space.1"));
        assert!(launder("Ünï").is_err());
        assert!(launder("a\"b").is_err());
        assert!(launder("").is_err());
        assert!(launder(&"x".repeat(64)).is_err());
    }

    #[test]
    fn property_orders_gdal_would_rearrange_are_refused() {
        let with_keys = |keys: &[u32]| {
            let mut feature = FeatureBuf::default();
            feature.properties = keys.iter().map(|k| (*k, Scalar::Null)).collect();
            feature
        };
        assert!(check_property_order(&with_keys(&[0, 1, 2]), 0).is_ok());
        assert!(
            check_property_order(&with_keys(&[0, 2]), 3).is_ok(),
            "missing ones"
        );
        assert!(
            check_property_order(&with_keys(&[0, 1, 2, 3]), 3).is_ok(),
            "new at the end"
        );
        assert!(
            check_property_order(&with_keys(&[0, 3]), 3).is_err(),
            "new, others missing"
        );
        assert!(
            check_property_order(&with_keys(&[1, 0]), 3).is_err(),
            "reordered"
        );
        assert!(
            check_property_order(&with_keys(&[0, 0]), 3).is_err(),
            "duplicate"
        );
    }
}

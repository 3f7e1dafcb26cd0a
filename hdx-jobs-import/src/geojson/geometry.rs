//! GeoJSON geometries to EWKB (little-endian, SRID 4326), the form PostGIS's binary input
//! (`geometry_recv`) takes in a binary COPY, and the layer geometry type GDAL declares.
//!
//! Only what GDAL writes unchanged is encoded: 2D positions of the six simple types, every part
//! non-empty, lines of two positions or more, rings of four or more that close exactly.
//! Anything else (3D or measured positions, empty geometries, GeometryCollections, open or short
//! rings) is refused with a reason, and the import falls back to GDAL.

/// A flattened coordinates item (see `super::read`): an array and its length (its items
/// follow), or a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Coord {
    /// An array of this many items.
    Array(u32),
    /// A number.
    Number(f64),
}

/// The geometry types the native import writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryKind {
    /// `Point`.
    Point,
    /// `LineString`.
    LineString,
    /// `Polygon`.
    Polygon,
    /// `MultiPoint`.
    MultiPoint,
    /// `MultiLineString`.
    MultiLineString,
    /// `MultiPolygon`.
    MultiPolygon,
}

impl GeometryKind {
    /// The kind of a GeoJSON `type` name (exact spelling).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Point" => GeometryKind::Point,
            "LineString" => GeometryKind::LineString,
            "Polygon" => GeometryKind::Polygon,
            "MultiPoint" => GeometryKind::MultiPoint,
            "MultiLineString" => GeometryKind::MultiLineString,
            "MultiPolygon" => GeometryKind::MultiPolygon,
            _ => return None,
        })
    }

    /// The name in a PostGIS column type, `geometry(<name>,4326)`.
    pub fn postgis_name(self) -> &'static str {
        match self {
            GeometryKind::Point => "Point",
            GeometryKind::LineString => "LineString",
            GeometryKind::Polygon => "Polygon",
            GeometryKind::MultiPoint => "MultiPoint",
            GeometryKind::MultiLineString => "MultiLineString",
            GeometryKind::MultiPolygon => "MultiPolygon",
        }
    }

    /// The WKB type code.
    fn wkb_code(self) -> u32 {
        match self {
            GeometryKind::Point => 1,
            GeometryKind::LineString => 2,
            GeometryKind::Polygon => 3,
            GeometryKind::MultiPoint => 4,
            GeometryKind::MultiLineString => 5,
            GeometryKind::MultiPolygon => 6,
        }
    }
}

/// The column type GDAL 3.6 gives a GeoJSON layer (`OGRGeoJSONUpdateLayerGeomType` without a
/// promotion to multi types, as measured): the type of every non-null geometry when they all
/// agree, else (mixed types, or no geometry at all) the generic `Geometry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerGeometry {
    /// No geometry seen yet.
    #[default]
    None,
    /// Every geometry so far is of this kind.
    Uniform(GeometryKind),
    /// Geometries of several kinds.
    Mixed,
}

impl LayerGeometry {
    /// The layer type after one more geometry.
    pub fn with(self, kind: GeometryKind) -> Self {
        match self {
            LayerGeometry::None => LayerGeometry::Uniform(kind),
            LayerGeometry::Uniform(k) if k == kind => self,
            _ => LayerGeometry::Mixed,
        }
    }

    /// The PostGIS column type, e.g. `geometry(Point,4326)`.
    pub fn column_type(self) -> String {
        let name = match self {
            LayerGeometry::Uniform(kind) => kind.postgis_name(),
            LayerGeometry::None | LayerGeometry::Mixed => "Geometry",
        };
        format!("geometry({name},4326)")
    }
}

/// EWKB's flag for an SRID after the type code.
const EWKB_SRID_FLAG: u32 = 0x2000_0000;
/// The SRID written in every geometry.
const SRID: u32 = 4326;

/// Reads the flattened coordinates of one geometry.
struct Cursor<'a> {
    items: &'a [Coord],
    at: usize,
}

impl Cursor<'_> {
    fn array(&mut self) -> Result<u32, String> {
        match self.items.get(self.at) {
            Some(Coord::Array(len)) => {
                self.at += 1;
                Ok(*len)
            }
            _ => Err("coordinates nested unlike the geometry type".into()),
        }
    }

    fn non_empty_array(&mut self) -> Result<u32, String> {
        match self.array()? {
            0 => Err("an empty geometry or part".into()),
            len => Ok(len),
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        match self.items.get(self.at) {
            Some(Coord::Number(v)) => {
                self.at += 1;
                Ok(*v)
            }
            _ => Err("coordinates nested unlike the geometry type".into()),
        }
    }

    fn position(&mut self) -> Result<[f64; 2], String> {
        match self.array()? {
            2 => Ok([self.number()?, self.number()?]),
            0 => Err("an empty position".into()),
            1 => Err("a position with one number".into()),
            _ => Err("3D or measured coordinates".into()),
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_position(out: &mut Vec<u8>, [x, y]: [f64; 2]) {
    out.extend_from_slice(&x.to_le_bytes());
    out.extend_from_slice(&y.to_le_bytes());
}

/// The WKB header of a geometry: byte order, type (with the SRID for the outermost one).
fn put_header(out: &mut Vec<u8>, kind: GeometryKind, with_srid: bool) {
    out.push(1);
    if with_srid {
        put_u32(out, kind.wkb_code() | EWKB_SRID_FLAG);
        put_u32(out, SRID);
    } else {
        put_u32(out, kind.wkb_code());
    }
}

/// A line's or ring's positions, at least `min` of them; a ring (`closed`) must end where it
/// starts, bit for bit.
fn put_points(
    cursor: &mut Cursor,
    out: &mut Vec<u8>,
    min: u32,
    closed: bool,
) -> Result<(), String> {
    let count = cursor.non_empty_array()?;
    if count < min {
        return Err(format!("a line or ring of {count} positions"));
    }
    put_u32(out, count);
    let first = cursor.position()?;
    put_position(out, first);
    let mut last = first;
    for _ in 1..count {
        last = cursor.position()?;
        put_position(out, last);
    }
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits();
    if closed && !(same(first[0], last[0]) && same(first[1], last[1])) {
        return Err("a polygon ring that does not close".into());
    }
    Ok(())
}

fn put_polygon_rings(cursor: &mut Cursor, out: &mut Vec<u8>) -> Result<(), String> {
    let rings = cursor.non_empty_array()?;
    put_u32(out, rings);
    for _ in 0..rings {
        put_points(cursor, out, 4, true)?;
    }
    Ok(())
}

/// Encodes a geometry of `kind` with the flattened `coords` as EWKB into `out` (cleared
/// first), or says why the native import does not take it.
pub fn encode_ewkb(kind: GeometryKind, coords: &[Coord], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let mut cursor = Cursor {
        items: coords,
        at: 0,
    };
    put_header(out, kind, true);
    match kind {
        GeometryKind::Point => put_position(out, cursor.position()?),
        GeometryKind::LineString => {
            put_points(&mut cursor, out, 2, false)?;
        }
        GeometryKind::Polygon => put_polygon_rings(&mut cursor, out)?,
        GeometryKind::MultiPoint => {
            let parts = cursor.non_empty_array()?;
            put_u32(out, parts);
            for _ in 0..parts {
                put_header(out, GeometryKind::Point, false);
                put_position(out, cursor.position()?);
            }
        }
        GeometryKind::MultiLineString => {
            let parts = cursor.non_empty_array()?;
            put_u32(out, parts);
            for _ in 0..parts {
                put_header(out, GeometryKind::LineString, false);
                put_points(&mut cursor, out, 2, false)?;
            }
        }
        GeometryKind::MultiPolygon => {
            let parts = cursor.non_empty_array()?;
            put_u32(out, parts);
            for _ in 0..parts {
                put_header(out, GeometryKind::Polygon, false);
                put_polygon_rings(&mut cursor, out)?;
            }
        }
    }
    if cursor.at != coords.len() {
        return Err("coordinates nested unlike the geometry type".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }

    fn arr(len: u32) -> Coord {
        Coord::Array(len)
    }

    fn num(v: f64) -> Coord {
        Coord::Number(v)
    }

    /// A polygon's coordinates, one ring (0 0, 1 0, 1 1, 0 y): closed when `last_y` is 0.
    fn one_ring_polygon(last_y: f64) -> Vec<Coord> {
        let mut coords = vec![arr(1), arr(4)];
        for (x, y) in [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, last_y)] {
            coords.extend([arr(2), num(x), num(y)]);
        }
        coords
    }

    #[test]
    fn points_and_polygons_encode_as_postgis_prints_them() {
        let mut out = Vec::new();
        encode_ewkb(GeometryKind::Point, &[arr(2), num(1.0), num(2.0)], &mut out).expect("point");
        // ST_AsEWKB('SRID=4326;POINT(1 2)'), as PostGIS prints it.
        assert_eq!(
            hex(&out),
            "0101000020E6100000000000000000F03F0000000000000040"
        );
        let ring = one_ring_polygon(0.0);
        encode_ewkb(GeometryKind::Polygon, &ring, &mut out).expect("polygon");
        assert_eq!(
            hex(&out),
            "0103000020E6100000010000000400000000000000000000000000000000000000000000000000F03F00000000\
             00000000000000000000F03F000000000000F03F00000000000000000000000000000000"
        );
        let mut multi = vec![arr(1)];
        multi.extend_from_slice(&ring);
        encode_ewkb(GeometryKind::MultiPolygon, &multi, &mut out).expect("multipolygon");
        assert!(hex(&out).starts_with("0106000020E6100000010000000103000000"));
    }

    #[test]
    fn what_gdal_would_change_is_refused() {
        let mut out = Vec::new();
        let three_d = [arr(3), num(1.0), num(2.0), num(3.0)];
        let refused = encode_ewkb(GeometryKind::Point, &three_d, &mut out);
        assert!(refused.is_err_and(|reason| reason.contains("3D")));
        assert!(encode_ewkb(GeometryKind::Point, &[arr(0)], &mut out).is_err());
        assert!(encode_ewkb(GeometryKind::MultiPoint, &[arr(0)], &mut out).is_err());
        let open = one_ring_polygon(0.5);
        let refused = encode_ewkb(GeometryKind::Polygon, &open, &mut out);
        assert!(refused.is_err_and(|reason| reason.contains("close")));
        let short_line = [arr(1), arr(2), num(0.0), num(0.0)];
        assert!(encode_ewkb(GeometryKind::LineString, &short_line, &mut out).is_err());
        // A point's coordinates under a line type.
        assert!(encode_ewkb(
            GeometryKind::LineString,
            &[arr(2), num(1.0), num(2.0)],
            &mut out
        )
        .is_err());
    }

    #[test]
    fn the_layer_type_is_generic_unless_every_geometry_agrees() {
        let point = LayerGeometry::None.with(GeometryKind::Point);
        assert_eq!(point.column_type(), "geometry(Point,4326)");
        assert_eq!(point.with(GeometryKind::Point), point);
        assert_eq!(
            point.with(GeometryKind::MultiPoint).column_type(),
            "geometry(Geometry,4326)"
        );
        assert_eq!(LayerGeometry::None.column_type(), "geometry(Geometry,4326)");
    }
}

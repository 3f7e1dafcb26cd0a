//! The GeoJSON files of the geopreview benchmark (`benches/geopreview.rs`), deterministic:
//! points with five properties (names, integers, reals, categories, dates) and polygons of
//! many vertices. Shared with `hdx-jobs-import/tests/geojson_fast_path.rs` (included there by
//! path), which checks at small sizes that the native GeoJSON import takes these files and
//! makes GDAL's table of them, so the benchmark measures the path it means to.

use std::path::Path;

/// A small deterministic generator (no dependency for random numbers).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes `n` points with the properties name, population, score, category, updated.
pub fn write_points(path: &Path, n: usize) {
    let mut rng = Lcg(42);
    let mut out = String::with_capacity(n * 200);
    out.push_str("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for i in 0..n {
        if i > 0 {
            out.push_str(",\n");
        }
        let (x, y) = (rng.next() * 340.0 - 170.0, rng.next() * 160.0 - 80.0);
        out.push_str(&format!(
            "{{\"type\":\"Feature\",\"properties\":{{\"name\":\"site {i}\",\"population\":{},\
             \"score\":{:.3},\"category\":\"c{}\",\"updated\":\"2024-0{}-1{}\"}},\
             \"geometry\":{{\"type\":\"Point\",\"coordinates\":[{x:.6},{y:.6}]}}}}",
            (rng.next() * 100_000.0) as u64,
            rng.next() * 100.0,
            i % 17,
            1 + i % 9,
            i % 10
        ));
    }
    out.push_str("\n]}\n");
    std::fs::write(path, out).expect("write points");
}

/// Writes `n` closed polygons of `vertices` positions (the last repeats the first) with the
/// properties admin, code.
pub fn write_polygons(path: &Path, n: usize, vertices: usize) {
    let mut rng = Lcg(7);
    let mut out = String::with_capacity(n * vertices * 30);
    out.push_str("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for i in 0..n {
        if i > 0 {
            out.push_str(",\n");
        }
        let (cx, cy) = (rng.next() * 340.0 - 170.0, rng.next() * 160.0 - 80.0);
        let r = 0.01 + rng.next() * 0.5;
        let mut ring = Vec::with_capacity(vertices);
        for v in 0..vertices - 1 {
            let a = v as f64 / (vertices - 1) as f64 * std::f64::consts::TAU;
            ring.push(format!(
                "[{:.6},{:.6}]",
                cx + r * a.cos(),
                cy + r * a.sin() * (0.8 + 0.2 * rng.next())
            ));
        }
        ring.push(ring[0].clone());
        out.push_str(&format!(
            "{{\"type\":\"Feature\",\"properties\":{{\"admin\":\"area {i}\",\"code\":{i}}},\
             \"geometry\":{{\"type\":\"Polygon\",\"coordinates\":[[{}]]}}}}",
            ring.join(",")
        ));
    }
    out.push_str("\n]}\n");
    std::fs::write(path, out).expect("write polygons");
}

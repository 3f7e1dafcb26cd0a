//! The preview page in a real browser: headless Chromium draws the layer with the bundled
//! MapLibre, and a screenshot has the layer's colour where its features are and background
//! elsewhere.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ChromeDriver, TestServer};
use fantoccini::Locator;
use serde_json::json;

const LAYER: &str = "pre_preview_1";

#[test]
fn the_preview_page_draws_the_layer() {
    let server = TestServer::start(&[]);
    let dir = testkit::temp_dir("hdx-jobs-preview");
    let file = dir.join("squares.geojson");
    let square = |x: f64, y: f64| {
        json!({"type": "Feature", "properties": {"name": format!("{x},{y}")},
        "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 1.0, y], [x + 1.0, y + 1.0], [x, y + 1.0], [x, y]]]}})
    };
    std::fs::write(
        &file,
        json!({"type": "FeatureCollection", "features": [square(10.0, 10.0), square(14.0, 14.0)]})
            .to_string(),
    )
    .expect("geojson");
    let output = Command::new("ogr2ogr")
        .args(["-f", "PostgreSQL"])
        .arg(format!("PG:{}", server.postgres.conn_string()))
        .arg(&file)
        .args([
            "-nln",
            LAYER,
            "-nlt",
            "PROMOTE_TO_MULTI",
            "-t_srs",
            "EPSG:4326",
        ])
        .output()
        .expect("ogr2ogr");
    testkit::check(&output, "ogr2ogr");
    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(look_at_the_map(&server, &driver));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn look_at_the_map(server: &TestServer, driver: &ChromeDriver) {
    let browser = driver.session(800, 636).await;
    browser
        .goto(&format!("{}/preview/{LAYER}", server.url))
        .await
        .expect("open the preview");
    browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("body[data-state='drawn']"))
        .await
        .expect("the map to draw (status: see the page's header)");

    // Where a square's middle and an empty spot between them are on screen.
    let project = |lon: f64, lat: f64| {
        let script = format!("const p = window.hdxMap.project([{lon}, {lat}]); return [p.x, p.y];");
        let browser = browser.clone();
        async move {
            let value = browser.execute(&script, vec![]).await.expect("project");
            let xy: Vec<f64> = serde_json::from_value(value).expect("x, y");
            (xy[0].round() as u32, xy[1].round() as u32 + 36)
        }
    };
    let inside = project(10.5, 10.5).await;
    let outside = project(12.5, 12.5).await;
    let png = browser.screenshot().await.expect("screenshot");
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("png");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut pixels).expect("frame");
    let channels = frame.color_type.samples();
    let at = |(x, y): (u32, u32)| {
        let i = ((y * frame.width + x) as usize) * channels;
        (pixels[i], pixels[i + 1], pixels[i + 2])
    };
    let (r, g, b) = at(inside);
    assert!(
        r > 150 && g < 150 && b < 150,
        "the feature is drawn in red at {inside:?}: {:?}",
        (r, g, b)
    );
    let (r, g, b) = at(outside);
    assert!(
        r > 240 && g > 240 && b > 240,
        "the background is white at {outside:?}: {:?}",
        (r, g, b)
    );
    let reddish = (0..frame.height)
        .flat_map(|y| (0..frame.width).map(move |x| (x, y)))
        .filter(|p| {
            let (r, g, b) = at(*p);
            r > 150 && g < 150 && b < 150
        })
        .count();
    assert!(reddish > 500, "{reddish} red pixels");

    // Clicking a feature shows its properties.
    let click = format!(
        "const p = new maplibregl.Point({}, {}); window.hdxMap.fire('click', {{point: p, lngLat: window.hdxMap.unproject(p)}});",
        inside.0,
        inside.1 - 36
    );
    browser.execute(&click, vec![]).await.expect("click");
    let popup = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".maplibregl-popup-content"))
        .await
        .expect("a popup");
    let text = popup.text().await.expect("text");
    assert!(
        text.contains("10,10"),
        "the clicked feature's name: {text:?}"
    );
    browser.close().await.expect("close");
}

//! The preview page in a real browser: headless Chromium draws the layer with the bundled
//! MapLibre, and a screenshot has the layer's colour where its features are, background
//! elsewhere, and the reference layer's country outlines (Natural Earth, bundled too) around
//! them, so that one sees where the layer is.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{ChromeDriver, TestServer};
use fantoccini::Locator;
use serde_json::json;

const LAYER: &str = "pre_preview_1";

/// The colour of the country outlines (`countries-outline` in assets/preview.html).
const OUTLINE: (u8, u8, u8) = (0x5b, 0x84, 0xb1);

/// Where the last screenshot is kept, to look at after a run (or a failure).
fn screenshot_path() -> PathBuf {
    std::env::temp_dir().join("hdx-jobs-preview.png")
}

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

    // The reference layer's data is served by hdx-jobs itself, cacheable like the map library.
    let response = TestServer::agent()
        .get(&format!("{}/preview/assets/countries.geojson", server.url))
        .call()
        .expect("GET countries.geojson");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        (
            response.status().as_u16(),
            header("content-type"),
            header("cache-control")
        ),
        (
            200,
            "application/geo+json".to_string(),
            "public, max-age=86400".to_string()
        ),
        "the country outlines are bundled (scripts/fetch-assets.sh, then rebuild)"
    );
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
    // The squares on screen, with a margin for their outline and its antialiasing.
    let mut squares = Vec::new();
    for (x, y) in [(10.0, 10.0), (14.0, 14.0)] {
        let (left, bottom) = project(x, y).await;
        let (right, top) = project(x + 1.0, y + 1.0).await;
        squares.push((
            left.saturating_sub(4),
            top.saturating_sub(4),
            right + 4,
            bottom + 4,
        ));
    }
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_path(), &png).expect("keep the screenshot");
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

    // The reference layer: country outlines in their own colour, around the layer (this sample
    // lies where Nigeria, Niger, Chad and Cameroon meet), under the map's header.
    let near = |a: u8, b: u8| a.abs_diff(b) <= 40;
    let outline_pixels = (36..frame.height)
        .flat_map(|y| (0..frame.width).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            !squares
                .iter()
                .any(|&(l, t, r, b)| (l..=r).contains(&x) && (t..=b).contains(&y))
        })
        .filter(|p| {
            let (r, g, b) = at(*p);
            near(r, OUTLINE.0) && near(g, OUTLINE.1) && near(b, OUTLINE.2)
        })
        .count();
    assert!(
        outline_pixels > 500,
        "country outlines are drawn away from the layer: {outline_pixels} pixels of {OUTLINE:?} \
         (screenshot: {})",
        screenshot_path().display()
    );
    // ... from the `countries` source, in the `countries-outline` layer, under the layer's own.
    let reference = browser
        .execute(
            "const map = window.hdxMap;
             const source = map.getSource('countries');
             const ids = map.getStyle().layers.map((l) => l.id);
             const outlines = source ? map.queryRenderedFeatures({layers: ['countries-outline']}) : [];
             return {
               source: source ? source.type : null,
               loaded: source ? map.isSourceLoaded('countries') : false,
               countries: [...new Set(outlines.map((f) => f.properties.name))].sort(),
               below: ids.indexOf('countries-outline') >= 0 && ids.indexOf('countries-outline') < ids.indexOf('fill'),
               attribution: (document.querySelector('.maplibregl-ctrl-attrib') || {}).textContent || '',
             };",
            vec![],
        )
        .await
        .expect("the reference layer's state");
    assert_eq!(
        (
            &reference["source"],
            &reference["loaded"],
            &reference["below"]
        ),
        (&json!("geojson"), &json!(true), &json!(true)),
        "the countries source is loaded and drawn under the layer: {reference}"
    );
    let countries: Vec<String> =
        serde_json::from_value(reference["countries"].clone()).expect("names");
    for name in ["Chad", "Niger", "Nigeria"] {
        assert!(
            countries.iter().any(|c| c == name),
            "{name} is outlined: {countries:?}"
        );
    }
    let attribution = reference["attribution"].as_str().unwrap_or_default();
    assert!(
        attribution.contains("Natural Earth"),
        "the map credits Natural Earth: {attribution:?}"
    );

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

    // Clicking elsewhere on land names the country (the reference layer answers only there).
    let click = format!(
        "const p = new maplibregl.Point({}, {}); window.hdxMap.fire('click', {{point: p, lngLat: window.hdxMap.unproject(p)}});",
        outside.0,
        outside.1 - 36
    );
    browser.execute(&click, vec![]).await.expect("click");
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//div[contains(@class, 'maplibregl-popup-content')][contains(., 'Nigeria')]",
        ))
        .await
        .expect("a popup naming Nigeria");
    browser.close().await.expect("close");
}

//! The monitor in a real browser (headless Chromium through ChromeDriver, both from Debian's
//! packages, installed by scripts/setup.sh): the page shows a failed job with its error, and
//! clicking "requeue" moves it back to its queue; the chart draws the jobs of the last minutes,
//! the search opens a job by id, and a worker's page lists the job it runs.

mod common;

use std::time::Duration;

use common::{ChromeDriver, TestServer};
use fantoccini::Locator;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::rq::worker::{Worker, WorkerOptions};
use hdx_jobs::task::TaskRegistry;
use serde_json::json;

#[test]
fn clicking_requeue_in_the_monitor_moves_a_failed_job_back_to_its_queue() {
    let server = TestServer::start(&[]);
    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(drive_the_monitor(&server, &driver));
}

async fn drive_the_monitor(server: &TestServer, driver: &ChromeDriver) {
    let redis = hdx_jobs::RedisClient::open(server.redis.url()).expect("redis");
    let id = Queue::new(redis.clone(), "work")
        .expect("queue")
        .enqueue(JobSpec::new("hdx_jobs.fail").arg("shown in the browser"))
        .await
        .expect("enqueue");
    let options = WorkerOptions {
        queues: vec!["work".into()],
        burst: true,
        ..Default::default()
    };
    Worker::new(redis, TaskRegistry::with_builtins(), options)
        .expect("worker")
        .run()
        .await
        .expect("run");

    let browser = driver.session(1280, 900).await;

    browser
        .goto(&format!("{}/monitor", server.url))
        .await
        .expect("open the monitor");
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("tr[data-queue='work'] a.count-failed"))
        .await
        .expect("queue row")
        .click()
        .await
        .expect("open the failed jobs");
    // The page rebuilds its tables every few seconds, so an element found may be replaced
    // before it is read or clicked: each step looks it up again until it succeeds.
    let error_text = testkit::eventually_await(
        "the failed job's error",
        Duration::from_secs(20),
        || async {
            let cell = browser
                .find(Locator::Css(&format!("tr[data-job='{id}'] td.error")))
                .await
                .ok()?;
            cell.text().await.ok()
        },
    )
    .await;
    assert_eq!(error_text, "TaskFailed: shown in the browser");
    testkit::eventually_await("a click on requeue", Duration::from_secs(20), || async {
        let button = browser
            .find(Locator::Css(&format!("button.requeue[data-job='{id}']")))
            .await
            .ok()?;
        button.click().await.ok()
    })
    .await;

    testkit::eventually_async("the job back in its queue", Duration::from_secs(20), || {
        let status: Option<String> = server
            .redis
            .query(redis::cmd("HGET").arg(format!("rq:job:{id}")).arg("status"));
        (status.as_deref() == Some("queued") && server.queued("work") == vec![id.clone()])
            .then_some(())
    })
    .await;
    // The notice is written once the browser has the answer, which may follow Redis' change.
    testkit::eventually_await("the notice", Duration::from_secs(20), || async {
        let notice = browser.find(Locator::Id("notice")).await.ok()?;
        let text = notice.text().await.ok()?;
        text.contains("requeued").then_some(())
    })
    .await;
    browser.close().await.expect("close");
}

#[test]
fn the_monitor_charts_jobs_finds_a_job_by_id_and_shows_what_a_worker_runs() {
    let mut server = TestServer::start(&[]);
    let driver = ChromeDriver::start();
    let worker = server.start_worker(&["slow"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(chart_search_and_worker(&server, &driver, &worker));
}

async fn chart_search_and_worker(server: &TestServer, driver: &ChromeDriver, worker: &str) {
    let redis = hdx_jobs::RedisClient::open(server.redis.url()).expect("redis");
    let work = Queue::new(redis.clone(), "work").expect("queue");
    let mut finished = Vec::new();
    for i in 0..3 {
        finished.push(
            work.enqueue(JobSpec::new("hdx_jobs.echo").arg(i))
                .await
                .expect("enqueue"),
        );
    }
    work.enqueue(JobSpec::new("hdx_jobs.fail").arg("charted"))
        .await
        .expect("enqueue");
    let options = WorkerOptions {
        queues: vec!["work".into()],
        burst: true,
        ..Default::default()
    };
    Worker::new(redis.clone(), TaskRegistry::with_builtins(), options)
        .expect("worker")
        .run()
        .await
        .expect("run");
    let sleeping = Queue::new(redis, "slow")
        .expect("queue")
        .enqueue(JobSpec::new("hdx_jobs.sleep").arg(json!({"seconds": 120})))
        .await
        .expect("enqueue");

    let browser = driver.session(1280, 1400).await;
    browser
        .goto(&format!("{}/monitor", server.url))
        .await
        .expect("open the monitor");

    // The chart: points drawn in the SVG, above its baseline, counting what ran.
    let drawn =
        testkit::eventually_await("points on the chart", Duration::from_secs(20), || async {
            let value = browser
                .execute(
                    "const chart = document.getElementById('chart');
                 const read = cls => [...chart.querySelectorAll('circle.point.' + cls)]
                   .map(c => ({ count: Number(c.dataset.count), cy: c.cy.baseVal.value }));
                 const box = chart.getBoundingClientRect();
                 return { finished: read('finished'), failed: read('failed'),
                          lines: chart.querySelectorAll('polyline').length, height: box.height };",
                    vec![],
                )
                .await
                .ok()?;
            let count = |cls: &str| -> u64 {
                value[cls]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["count"].as_u64())
                    .sum()
            };
            (count("finished") == 3 && count("failed") == 1).then_some(value)
        })
        .await;
    for point in drawn["finished"]
        .as_array()
        .into_iter()
        .chain(drawn["failed"].as_array())
        .flatten()
    {
        let cy = point["cy"].as_f64().expect("cy");
        assert!(
            cy < 142.0,
            "a point with jobs sits on the baseline: {drawn}"
        );
    }
    assert_eq!(drawn["lines"], 2, "{drawn}");
    assert!(drawn["height"].as_f64().unwrap_or(0.0) > 100.0, "{drawn}");

    // The search opens a job by its id.
    let search = browser
        .find(Locator::Id("search-id"))
        .await
        .expect("search box");
    search.send_keys(&finished[1]).await.expect("type the id");
    browser
        .find(Locator::Css("#search button"))
        .await
        .expect("search button")
        .click()
        .await
        .expect("search");
    testkit::eventually_await("the job opened", Duration::from_secs(20), || async {
        let title = browser.find(Locator::Id("job-title")).await.ok()?;
        let detail = browser.find(Locator::Id("job-detail")).await.ok()?;
        let (title, detail) = (title.text().await.ok()?, detail.text().await.ok()?);
        (title == format!("Job {} (finished)", finished[1]) && detail.contains("hdx_jobs.echo"))
            .then_some(())
    })
    .await;

    // The worker's page lists the job it runs.
    testkit::eventually_await("a click on the worker", Duration::from_secs(20), || async {
        let link = browser
            .find(Locator::Css(&format!(
                "tr[data-worker='{worker}'] a.worker"
            )))
            .await
            .ok()?;
        link.click().await.ok()
    })
    .await;
    let row = testkit::eventually_await("the running job", Duration::from_secs(20), || async {
        let row = browser
            .find(Locator::Css(&format!("#running tr[data-job='{sleeping}']")))
            .await
            .ok()?;
        row.text().await.ok()
    })
    .await;
    assert!(
        row.contains("hdx_jobs.sleep") && row.contains("slow"),
        "{row}"
    );
    let host = browser
        .find(Locator::Css("#worker-detail dd[data-field='pid']"))
        .await
        .expect("pid")
        .text()
        .await
        .expect("text");
    assert_eq!(host, std::process::id().to_string());
    if let Ok(png) = browser.screenshot().await {
        let _ = std::fs::write(std::env::temp_dir().join("hdx-jobs-monitor.png"), png);
    }
    browser.close().await.expect("close");
}

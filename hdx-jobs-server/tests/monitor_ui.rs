//! The monitor in a real browser (headless Chromium through ChromeDriver, both from Debian's
//! packages, installed by scripts/setup.sh): the page shows a failed job with its error, and
//! clicking "requeue" moves it back to its queue.

mod common;

use std::time::Duration;

use common::{ChromeDriver, TestServer};
use fantoccini::Locator;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::rq::worker::{Worker, WorkerOptions};
use hdx_jobs::task::TaskRegistry;

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

//! SIGTERM/SIGINT handling for the binaries: [`shutdown_signal`] is the shutdown future of the
//! server and the scheduler; [`stop_on_signals`] stops a worker warm on the first signal and
//! cold on the second.

use tokio::signal::unix::{signal, SignalKind};

use crate::rq::worker::StopHandle;

/// Resolves on the first SIGTERM or SIGINT (never, if the handlers cannot be installed).
pub async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install signal handlers; SIGTERM/SIGINT will not stop this process"
        );
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Listens for SIGTERM and SIGINT until the second one: warm stop on the first, cold on the
/// second. Spawn it beside [`Worker::run`](crate::rq::worker::Worker::run).
pub async fn stop_on_signals(handle: StopHandle) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install signal handlers; stop the worker with the shutdown command"
        );
        return;
    };
    let mut received = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        received += 1;
        if received == 1 {
            tracing::info!("warm shutdown: finishing running jobs (signal again to stop at once)");
            handle.warm();
        } else {
            tracing::warn!("cold shutdown: cancelling running jobs");
            handle.cold();
            return;
        }
    }
}

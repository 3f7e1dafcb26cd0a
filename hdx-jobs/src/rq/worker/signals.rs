//! SIGTERM/SIGINT handling: the first signal stops the worker warm, the second cold.

use tokio::signal::unix::{signal, SignalKind};

use super::StopHandle;

/// Listens for SIGTERM and SIGINT until the second one: warm stop on the first, cold on the
/// second. Spawn it beside [`super::Worker::run`].
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

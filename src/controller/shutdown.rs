//! Two-stage shutdown on SIGTERM, SIGINT or SIGHUP: the first signal cancels the token (stop
//! claiming, cancel running removals, save their progress, release leases, exit within the
//! grace period); a second signal exits the process at once.
//!
//! SIGHUP is a graceful stop, not a configuration reload: its default action would kill the
//! process on the spot with its leases held (a closed terminal or SSH session, or a
//! supervisor's "reload"), leaving the folders for the lease to expire. A supervisor that
//! restarts the process then gives the effect of a reload, with the configuration checked
//! again at start-up.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code of the immediate exit on a second signal.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Cancels `token` on the first SIGTERM, SIGINT or SIGHUP and exits the process on the
/// second.
/// Returns an error only when the signal handlers cannot be installed.
pub fn shutdown_on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => "SIGHUP",
            };
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    signal = name,
                    "shutting down: no new claims, cancelling removals, releasing leases (send again to exit at once)"
                );
                token.cancel();
            } else {
                tracing::warn!(
                    signal = name,
                    "second signal: exiting immediately; leases expire on their own"
                );
                std::process::exit(FORCED_EXIT_CODE);
            }
        }
    });
    Ok(())
}

//! The async runtime the binary runs on, and why its scheduler is tuned.
//!
//! tokio's multi-threaded scheduler runs the task that a running task has
//! just woken next, ahead of every task already waiting (its "LIFO slot").
//! That favours a message handed from task to task, but it defeats the
//! write coalescing of the engine's store connections. A redis-rs
//! multiplexed connection, like the MongoDB driver's connections, is driven
//! by one task that writes whatever commands have queued up and then
//! flushes them in one `writev`. Woken by the first command, that task ran
//! as soon as the sender yielded, before the other tasks ready to run had
//! queued theirs: under load most commands went out alone, one system call
//! each, and on loopback the sending call is where the kernel does the
//! receiving side's TCP work too. A profile of the end-to-end run put 15 %
//! of the engine's CPU in those writes.
//!
//! With the slot disabled, a woken task joins the back of its worker's
//! queue (where another worker can also steal it), the tasks already ready
//! run first, and their commands share the flush: 42 % fewer `writev` calls
//! for the same work, and end to end 1.13× (`BENCHMARKS.md`, "The
//! scheduler's LIFO slot").
//!
//! `Builder::disable_lifo_slot` is one of tokio's unstable options: it
//! exists only in a build with `--cfg tokio_unstable`, which the
//! workspace's `.cargo/config.toml` sets. A build without it (a `RUSTFLAGS`
//! environment variable replaces the file's flags) keeps tokio's default
//! scheduling and says so in the log ([`Scheduling::log`]).

use tokio::runtime::{Builder, Runtime};

/// How the runtime schedules woken tasks, logged once logging is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// A woken task waits behind the tasks already ready (see the module
    /// docs).
    Fifo,
    /// tokio's default: a woken task runs next. A build without
    /// `--cfg tokio_unstable` cannot change it.
    LifoSlot,
}

impl Scheduling {
    /// Logs the scheduling in use.
    pub fn log(self) {
        match self {
            Self::Fifo => tracing::info!("woken tasks wait their turn (tokio's LIFO slot disabled)"),
            Self::LifoSlot => tracing::warn!(
                "built without --cfg tokio_unstable: tokio's LIFO slot stays on, and store writes coalesce less (see .cargo/config.toml)"
            ),
        }
    }
}

/// The multi-threaded runtime of the engine's binary, with its scheduling.
pub fn build() -> std::io::Result<(Runtime, Scheduling)> {
    let mut builder = Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    let scheduling = {
        builder.disable_lifo_slot();
        Scheduling::Fifo
    };
    #[cfg(not(tokio_unstable))]
    let scheduling = Scheduling::LifoSlot;
    Ok((builder.build()?, scheduling))
}

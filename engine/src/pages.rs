//! How the engine's process asks the kernel for memory.
//!
//! mimalloc, the global allocator, marks the regions it reserves as fit for
//! transparent huge pages (`madvise(MADV_HUGEPAGE)`), which Linux then
//! backs with 2 MiB pages even where the system setting is `madvise` (the
//! default of most distributions). The engine's memory churns: a
//! delivery's actor, its messages and documents come and go thousands of
//! times a second, and mimalloc hands freed pages back to the kernel after
//! a second. Each region touched again then faults in a fresh huge page,
//! which the kernel zeroes whole: 2 MiB cleared for a few small objects.
//! In a profile of the end-to-end benchmark that zeroing was 16 % of the
//! engine's CPU; with huge pages off the engine's peak memory is smaller
//! and, in two of three alternating sessions, it was 1.12 to 1.14 times
//! as fast (`BENCHMARKS.md`, "Transparent huge pages").
//!
//! [`prefer_small_pages`] turns them off for this process only (the
//! `PR_SET_THP_DISABLE` flag, which mimalloc itself sets when its
//! `MIMALLOC_ALLOW_THP` option is 0), before the runtime starts. An
//! operator who sets `MIMALLOC_ALLOW_THP` explicitly keeps the choice.
//!
//! Except for a gateway-only process (`--role gateway`): its memory is
//! long-lived (connections, buffers), so it has no churn to lose and keeps
//! the huge pages' fewer TLB misses; measured, small pages cost it 5 to 9 %
//! more CPU per request.

/// What [`prefer_small_pages`] did, for the log once logging is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageSetting {
    /// Huge pages were turned off for this process.
    SmallPages,
    /// `MIMALLOC_ALLOW_THP` was set: mimalloc applies it.
    LeftToMimalloc,
    /// A gateway-only process: huge pages as the kernel and mimalloc have
    /// them.
    KeptForGateway,
    /// The kernel refused (or this is not Linux): its default applies.
    Unchanged(String),
}

impl PageSetting {
    /// Says what was done, once logging is set up.
    pub fn log(&self) {
        match self {
            Self::SmallPages => tracing::debug!("transparent huge pages off for this process"),
            Self::LeftToMimalloc => {
                tracing::info!("transparent huge pages as MIMALLOC_ALLOW_THP says");
            }
            Self::KeptForGateway => {
                tracing::debug!("transparent huge pages kept: gateway-only process");
            }
            Self::Unchanged(why) => {
                tracing::info!(reason = %why, "transparent huge pages left as the kernel has them");
            }
        }
    }
}

/// Turns transparent huge pages off for this process unless
/// `MIMALLOC_ALLOW_THP` is set or the process only serves the gateway
/// (`gateway_only`; see the module docs). Call it first thing in `main`,
/// before threads start: the flag covers what is faulted in afterwards.
pub fn prefer_small_pages(gateway_only: bool) -> PageSetting {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return PageSetting::LeftToMimalloc;
    }
    if gateway_only {
        return PageSetting::KeptForGateway;
    }
    disable_thp()
}

#[cfg(target_os = "linux")]
fn disable_thp() -> PageSetting {
    match nix::sys::prctl::set_thp_disable(true) {
        Ok(()) => PageSetting::SmallPages,
        Err(e) => PageSetting::Unchanged(e.to_string()),
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_thp() -> PageSetting {
    PageSetting::Unchanged("transparent huge pages are a Linux setting".into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The flag is what the kernel reports afterwards (a test process of
    /// its own would be needed to see it off before; setting it twice is
    /// harmless).
    #[test]
    fn the_kernel_reports_huge_pages_off() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        assert_eq!(prefer_small_pages(true), PageSetting::KeptForGateway);
        assert_eq!(prefer_small_pages(false), PageSetting::SmallPages);
        assert_eq!(nix::sys::prctl::get_thp_disable().ok(), Some(true));
    }
}

//! The standard `process_*` series (the names Prometheus' own client
//! libraries export, so stock dashboards and alerts work), read from
//! `/proc/self` by the `procfs` crate when `/metrics` is scraped: nothing is
//! recorded on the request path. A file that cannot be read leaves its
//! series out (never a made-up value); other platforms export none.
//!
//! - `process_cpu_seconds_total`: user + system CPU time.
//! - `process_resident_memory_bytes`, `process_virtual_memory_bytes`.
//! - `process_virtual_memory_max_bytes`: the address-space limit (absent
//!   when unlimited).
//! - `process_open_fds`, `process_max_fds` (the soft limit).
//! - `process_start_time_seconds`: start time, unix seconds.

use std::fmt::Write as _;

/// Appends the `process_*` series to `out`.
#[cfg(target_os = "linux")]
pub(super) fn render(out: &mut String) {
    use procfs::process::{LimitValue, Process};

    let Ok(me) = Process::myself() else {
        return;
    };
    let ticks = procfs::ticks_per_second();
    if let Ok(stat) = me.stat() {
        if ticks > 0 {
            #[allow(clippy::cast_precision_loss)]
            // clock ticks: far below 2^53 for any real process
            let cpu = (stat.utime + stat.stime) as f64 / ticks as f64;
            series(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                cpu,
            );
        }
        let rss = stat.rss.saturating_mul(procfs::page_size());
        #[allow(clippy::cast_precision_loss)]
        // byte counts below 2^53
        {
            series(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                rss as f64,
            );
            series(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                stat.vsize as f64,
            );
        }
        if let (Ok(boot), true) = (procfs::boot_time_secs(), ticks > 0) {
            #[allow(clippy::cast_precision_loss)]
            // seconds since 1970 and clock ticks since boot: below 2^53
            let start = boot as f64 + stat.starttime as f64 / ticks as f64;
            series(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                start,
            );
        }
    }
    if let Ok(n) = me.fd_count() {
        #[allow(clippy::cast_precision_loss)]
        // a descriptor count
        series(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            n as f64,
        );
    }
    if let Ok(limits) = me.limits() {
        if let LimitValue::Value(v) = limits.max_open_files.soft_limit {
            #[allow(clippy::cast_precision_loss)]
            // a descriptor limit
            series(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                v as f64,
            );
        }
        if let LimitValue::Value(v) = limits.max_address_space.soft_limit {
            #[allow(clippy::cast_precision_loss)]
            // a byte limit
            series(
                out,
                "process_virtual_memory_max_bytes",
                "gauge",
                "Maximum amount of virtual memory available in bytes.",
                v as f64,
            );
        }
    }
}

/// No `/proc` here: no `process_*` series.
#[cfg(not(target_os = "linux"))]
pub(super) fn render(_out: &mut String) {}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn series(out: &mut String, name: &str, kind: &str, help: &str, v: f64) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
    );
}

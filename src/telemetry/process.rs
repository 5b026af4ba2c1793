//! The process's own resource use as the standard Prometheus `process_*` metrics (CPU seconds,
//! resident and virtual memory, threads, open and maximum file descriptors, start time), so the
//! dashboard can show CPU and memory per pod next to the work done. Linux only: a sampler thread
//! reads `/proc/self/stat`, `/proc/self/fd` and `/proc/self/limits` periodically and sets the
//! metrics through the process-wide recorder; elsewhere nothing is exported.

use std::time::Duration;

use metrics::Unit;

use super::metric;

/// How often the sampler reads `/proc`: often enough that a scrape sees fresh values, and far
/// inside the recorder's idle timeout for gauges.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// The fields of `/proc/[pid]/stat` the metrics need, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Parses `/proc/[pid]/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0 here, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The soft "Max open files" limit of `/proc/[pid]/limits`; `None` if unlimited or absent.
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, seconds since the epoch) of `/proc/stat`.
pub fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Describes the metrics and starts the sampler thread (Linux; a no-op elsewhere). Returns an
/// error only if the thread cannot be started.
pub fn spawn_sampler() -> std::io::Result<()> {
    describe();
    #[cfg(target_os = "linux")]
    {
        std::thread::Builder::new()
            .name("process-metrics".into())
            .spawn(|| {
                let clock = Clock::read();
                loop {
                    sample(&clock);
                    std::thread::sleep(SAMPLE_PERIOD);
                }
            })?;
    }
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        metric::CPU_SECONDS,
        Unit::Seconds,
        "User and system CPU time spent, in whole seconds."
    );
    describe_gauge!(
        metric::RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Resident memory size."
    );
    describe_gauge!(
        metric::VIRTUAL_MEMORY_BYTES,
        Unit::Bytes,
        "Virtual memory size."
    );
    describe_gauge!(metric::THREADS, Unit::Count, "OS threads of the process.");
    describe_gauge!(metric::OPEN_FDS, Unit::Count, "Open file descriptors.");
    describe_gauge!(
        metric::MAX_FDS,
        Unit::Count,
        "Maximum number of open file descriptors (soft limit)."
    );
    describe_gauge!(
        metric::START_TIME_SECONDS,
        Unit::Seconds,
        "Start time of the process since the Unix epoch."
    );
}

/// The kernel's clock-tick rate and page size, and the boot time, read once.
#[cfg(target_os = "linux")]
struct Clock {
    ticks_per_second: u64,
    page_bytes: u64,
    boot_time: Option<u64>,
}

#[cfg(target_os = "linux")]
impl Clock {
    fn read() -> Clock {
        Clock {
            ticks_per_second: sysconf(libc_names::CLK_TCK).unwrap_or(100),
            page_bytes: sysconf(libc_names::PAGESIZE).unwrap_or(4096),
            boot_time: std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_boot_time),
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod libc_names {
    pub const CLK_TCK: libc::c_int = libc::_SC_CLK_TCK;
    pub const PAGESIZE: libc::c_int = libc::_SC_PAGESIZE;
}

#[cfg(all(target_os = "linux", not(target_env = "gnu")))]
mod libc_names {
    pub const CLK_TCK: i32 = 0;
    pub const PAGESIZE: i32 = 0;
}

/// `sysconf(name)`, if the C library answers with a positive value.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

#[cfg(all(target_os = "linux", not(target_env = "gnu")))]
fn sysconf(_name: i32) -> Option<u64> {
    None
}

/// One reading of `/proc/self`; a file that cannot be read leaves its metrics as they were.
#[cfg(target_os = "linux")]
fn sample(clock: &Clock) {
    use metrics::{counter, gauge};
    if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
    {
        counter!(metric::CPU_SECONDS).absolute(stat.cpu_ticks / clock.ticks_per_second);
        gauge!(metric::RESIDENT_MEMORY_BYTES)
            .set((stat.resident_pages.saturating_mul(clock.page_bytes)) as f64);
        gauge!(metric::VIRTUAL_MEMORY_BYTES).set(stat.virtual_bytes as f64);
        gauge!(metric::THREADS).set(stat.threads as f64);
        if let Some(boot) = clock.boot_time {
            gauge!(metric::START_TIME_SECONDS)
                .set(boot as f64 + stat.start_ticks as f64 / clock.ticks_per_second as f64);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        gauge!(metric::OPEN_FDS).set(entries.count() as f64);
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(parse_max_open_files)
    {
        gauge!(metric::MAX_FDS).set(max as f64);
    }
}

#[cfg(test)]
mod tests;

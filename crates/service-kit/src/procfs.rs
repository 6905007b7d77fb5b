//! What Linux says about a running process — its memory, CPU time, open descriptors, name and
//! scheduling state — read from `/proc/PID/…`, and the machine's CPU counters from `/proc/stat`.
//!
//! One reader for every tool that watches the platform's processes: the load generator and the
//! soak test sample memory and CPU, the test harness ([`crate::testing::process`], with the
//! `testing` feature) asks whether a child still runs or is stopped.

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every mainstream platform.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Why a process could not be sampled.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The files could not be read (the process has gone, or this is not Linux).
    #[error("reading /proc/{pid}: {source}")]
    Read {
        /// The process id.
        pid: u32,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The files did not have the expected fields.
    #[error("unexpected format in /proc/{0}")]
    Format(u32),
}

/// One reading of a process (or the sum over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size in bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// User plus system CPU time so far, in clock ticks.
    pub cpu_ticks: u64,
}

/// Reads one process (`"self"` works through [`sample_self`]).
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    read(&pid.to_string(), pid)
}

/// Reads this process.
pub fn sample_self() -> Result<ProcSample, ProcError> {
    read("self", std::process::id())
}

fn read(dir: &str, pid: u32) -> Result<ProcSample, ProcError> {
    let status = std::fs::read_to_string(format!("/proc/{dir}/status"))
        .map_err(|source| ProcError::Read { pid, source })?;
    let stat = std::fs::read_to_string(format!("/proc/{dir}/stat"))
        .map_err(|source| ProcError::Read { pid, source })?;
    Ok(ProcSample {
        rss_bytes: parse_rss(&status).ok_or(ProcError::Format(pid))?,
        cpu_ticks: parse_cpu_ticks(&stat).ok_or(ProcError::Format(pid))?,
    })
}

/// Reads several processes (a bridge and its Redis, the nodes of a cluster), in the order
/// given; `None` when `pids` is empty or one of them cannot be read.
pub fn sample_each(pids: &[u32]) -> Option<Vec<ProcSample>> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| sample(pid).ok()).collect()
}

/// The sum of several readings.
pub fn total(samples: &[ProcSample]) -> ProcSample {
    samples
        .iter()
        .fold(ProcSample::default(), |sum, one| ProcSample {
            rss_bytes: sum.rss_bytes + one.rss_bytes,
            cpu_ticks: sum.cpu_ticks + one.cpu_ticks,
        })
}

/// Sums the readings of several processes; `None` when `pids` is empty or one of them cannot
/// be read.
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    sample_each(pids).map(|each| total(&each))
}

/// How many file descriptors a process has open now (`/proc/PID/fd`); `None` when it cannot
/// be read (the process has gone, or belongs to another user).
pub fn open_fds(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u64)
}

/// The scheduling state of a process, the letter `/proc/PID/stat` shows (`R` running, `S`
/// sleeping, `T` stopped by a signal, `Z` zombie, …); `None` when it cannot be read (the
/// process has gone and been reaped).
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_state(&stat)
}

/// Whether a process is still running: it exists and is neither a zombie (exited, not yet
/// reaped) nor dead. A stopped process (SIGSTOP) counts as running.
pub fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|state| state != 'Z' && state != 'X')
}

/// The command name of a process (`/proc/PID/comm`: `topic-server`, `redis-server`, …).
pub fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(before: ProcSample, after: ProcSample, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_SECOND / seconds * 100.0
}

/// CPU time of the whole machine so far (`/proc/stat`), in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineSample {
    /// Ticks spent on anything but idle and I/O wait, all cores together.
    pub busy_ticks: u64,
}

/// Reads the machine-wide CPU counters, so a run can tell how much of the machine went to
/// processes other than the server and loadgen (a concurrent build, say).
pub fn sample_machine() -> Option<MachineSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine(&stat)
}

fn parse_machine(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    let total: u64 = fields.iter().take(8).sum();
    Some(MachineSample {
        busy_ticks: total.saturating_sub(idle),
    })
}

/// Machine-wide CPU use between two samples, in percent of one core.
pub fn machine_cpu_percent(before: MachineSample, after: MachineSample, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    after.busy_ticks.saturating_sub(before.busy_ticks) as f64 / TICKS_PER_SECOND / seconds * 100.0
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The fields of `/proc/PID/stat` after the command name (field 2, in parentheses, which may
/// itself contain spaces and parentheses): fields 3, 4, ….
fn fields_after_name(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

fn parse_state(stat: &str) -> Option<char> {
    fields_after_name(stat)?.first()?.chars().next()
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let fields = fields_after_name(stat)?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t   2048 kB\nThreads: 1\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_rss("Name: x\n"), None);
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_state(stat), Some('S'));
        assert_eq!(parse_state("42 (a) b) T 1"), Some('T'));
        assert_eq!(parse_state("garbage"), None);
        let machine = parse_machine("cpu  10 1 5 100 4 0 2 0 0 0\ncpu0 1 1 1 1\n").unwrap();
        assert_eq!(machine.busy_ticks, 18);
        assert_eq!(parse_machine("intr 1 2\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = sample_self().unwrap();
        assert!(me.rss_bytes > 0);
        assert!(sample(u32::MAX).is_err());
        assert!(sample_all(&[]).is_none());
        let pid = std::process::id();
        let each = sample_each(&[pid, pid]).unwrap();
        assert_eq!(each.len(), 2);
        assert_eq!(
            total(&each).rss_bytes,
            each[0].rss_bytes + each[1].rss_bytes
        );
        assert!(sample_each(&[pid, u32::MAX]).is_none());
        assert!(process_name(pid).is_some_and(|name| !name.is_empty()));
        // Standard input, output and error at least (other tests open files meanwhile).
        assert!(open_fds(pid).is_some_and(|fds| fds >= 3));
        assert_eq!(open_fds(u32::MAX), None);
        assert_eq!(process_name(u32::MAX), None);
        assert!(alive(pid));
        assert!(state(pid).is_some_and(|state| state != 'T'));
        assert!(!alive(u32::MAX));
        assert_eq!(state(u32::MAX), None);
    }
}

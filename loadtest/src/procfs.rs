//! Server CPU time and memory from /proc, and this process's file limit.

use std::fs;

/// CPU time the process has consumed, in nanoseconds. Sums the first field of
/// each thread's `schedstat` (time on CPU, ns resolution); falls back to
/// `utime + stime` from `stat` (clock-tick resolution) where schedstat is off.
/// Threads that have already exited are not counted by either.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    schedstat_ns(pid).or_else(|| stat_ns(pid))
}

fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let schedstat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn stat_ns(pid: u32) -> Option<u64> {
    cpu_split(pid).map(|split| split.user_ns + split.kernel_ns)
}

/// CPU time spent in user space and in the kernel, in nanoseconds.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CpuSplit {
    pub user_ns: u64,
    pub kernel_ns: u64,
}

impl std::iter::Sum for CpuSplit {
    fn sum<I: Iterator<Item = CpuSplit>>(splits: I) -> CpuSplit {
        splits.fold(CpuSplit::default(), |total, split| CpuSplit {
            user_ns: total.user_ns + split.user_ns,
            kernel_ns: total.kernel_ns + split.kernel_ns,
        })
    }
}

/// The process's user and kernel time (`utime`, `stime` of `/proc/PID/stat`,
/// all its threads, clock-tick resolution): schedstat has only the total.
pub fn cpu_split(pid: u32) -> Option<CpuSplit> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    parse_cpu_split(&stat, ticks_per_sec)
}

fn parse_cpu_split(stat: &str, ticks_per_sec: u64) -> Option<CpuSplit> {
    // The command name may contain spaces and parentheses; fields are
    // counted after its last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ns = |ticks: &str| Some(ticks.parse::<u64>().ok()? * 1_000_000_000 / ticks_per_sec.max(1));
    Some(CpuSplit {
        user_ns: ns(fields.get(11)?)?,
        kernel_ns: ns(fields.get(12)?)?,
    })
}

/// `reading` summed over the processes of a cluster's nodes; None without
/// pids, or if any reading fails (a node that died would skew the sum).
pub fn summed<T: std::iter::Sum>(pids: &[u32], reading: impl Fn(u32) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| reading(pid)).sum()
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises the soft limit on open files to the hard limit: every connection is a descriptor.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_ns(pid).is_some());
        assert!(stat_ns(pid).is_some());
        assert!(rss_kib(pid).unwrap() > 0);
    }

    #[test]
    fn splits_user_and_kernel_time() {
        // A command name with spaces and a ')' of its own; utime 250, stime 40.
        let stat = "4242 (ringcast (x) 1) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 40 0 0 20 0 \
                    3 0 100 12345678 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(
            parse_cpu_split(stat, 100),
            Some(CpuSplit {
                user_ns: 2_500_000_000,
                kernel_ns: 400_000_000,
            })
        );
        assert_eq!(parse_cpu_split("4242 (short) S 1 2", 100), None);
        assert_eq!(parse_cpu_split("no command name", 100), None);
        let split = cpu_split(std::process::id()).unwrap();
        let pids = [std::process::id(), std::process::id()];
        let twice = summed(&pids, cpu_split).unwrap();
        assert!(twice.user_ns >= 2 * split.user_ns);
    }

    #[test]
    fn sums_over_every_pid_or_gives_none() {
        let reading = |pid: u32| (pid < 10).then_some(u64::from(pid) * 100);
        assert_eq!(summed(&[1, 2], reading), Some(300));
        assert_eq!(summed(&[3], reading), Some(300));
        assert_eq!(summed(&[1, 42], reading), None);
        assert_eq!(summed(&[], reading), None);
    }
}

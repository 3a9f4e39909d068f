//! The load tool's own CPU use, so a report says how much of the machine the driver
//! took while it measured (on a machine shared with the server, a driver that eats
//! the cores it measures on is part of what it measures).

use std::time::Instant;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: Linux's `USER_HZ`,
/// fixed at 100 for user space on every architecture whatever the kernel's `HZ`.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, every thread) this process has used so far; `None`
/// where `/proc/self/stat` cannot be read (not Linux).
pub fn process_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field
/// 2) is in parentheses and may hold spaces, so fields are counted after its `)`:
/// there `state` is the first, and `utime` and `stime` (fields 14 and 15) the 12th
/// and 13th.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Measures the CPU this process uses from `start` on, as cores busy on average.
pub struct Meter {
    cpu_s: Option<f64>,
    wall: Instant,
}

impl Meter {
    pub fn start() -> Self {
        Self {
            cpu_s: process_seconds(),
            wall: Instant::now(),
        }
    }

    /// Average cores used since `start` (1.0: one core fully busy); `None` without
    /// `/proc`. The ticks are 10 ms, so a short interval is coarse.
    pub fn cores(&self) -> Option<f64> {
        let used = process_seconds()? - self.cpu_s?;
        let wall = self.wall.elapsed().as_secs_f64();
        (wall > 0.0).then(|| used / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        // A command name with spaces and a parenthesis, as the kernel may show it.
        let line = "4242 (ticket nest) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 300 18446744073709551615";
        assert_eq!(parse_stat(line), Some(3.25));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(process_seconds().is_some_and(|s| s >= 0.0));
        }
    }
}

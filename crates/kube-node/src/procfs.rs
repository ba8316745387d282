//! Resource use of a container's processes, read from /proc.
//!
//! A container is a process group (its first process is the leader, and its
//! children stay in the group unless they leave it on purpose). Memory is
//! the group's resident set: what cAdvisor calls the working set, without
//! the page-cache subtleties of a cgroup. CPU is user + system time.

use std::collections::BTreeMap;

/// What a process group uses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Resident memory of all its processes, bytes.
    pub rss_bytes: u64,
    /// CPU time of its live processes, seconds.
    pub cpu_seconds: f64,
    /// Live processes.
    pub processes: u32,
}

/// One line of `/proc/PID/stat`: (process group, utime+stime ticks, rss pages).
pub fn parse_stat(stat: &str) -> Option<(i32, u64, u64)> {
    // The command name is in parentheses and may hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let pgrp = fields.get(2)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss: i64 = fields.get(21)?.parse().ok()?;
    Some((pgrp, utime + stime, u64::try_from(rss).unwrap_or(0)))
}

/// Usage of every process group on the machine, by group id: one pass over
/// /proc serves all containers.
pub fn usage_by_group() -> BTreeMap<i32, Usage> {
    let page = rustix::param::page_size() as u64;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let mut groups: BTreeMap<i32, Usage> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return groups };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((pgrp, cpu, rss)) = parse_stat(&stat) else { continue };
        let usage = groups.entry(pgrp).or_default();
        usage.rss_bytes += rss * page;
        usage.cpu_seconds += cpu as f64 / ticks;
        usage.processes += 1;
    }
    groups
}

/// A Kubernetes quantity of bytes (`64Mi`, `1G`, `500000`, `1.5Gi`, `128974848e0`).
pub fn parse_bytes(quantity: &str) -> Option<u64> {
    let q = quantity.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "m" => 1e-3,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = value * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes.ceil() as u64)
}

/// A Kubernetes quantity of CPU in cores (`500m`, `2`, `0.25`).
pub fn parse_cores(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    let cores = match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => q.parse::<f64>().ok()?,
    };
    (cores.is_finite() && cores >= 0.0).then_some(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 100 1000000 300 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4242, 300, 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_group_is_seen() {
        let me = rustix::process::getpgrp().as_raw_nonzero().get();
        let usage = usage_by_group();
        let mine = usage.get(&me).copied().unwrap_or_default();
        assert!(mine.processes >= 1 && mine.rss_bytes > 0, "{mine:?}");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_bytes("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1.5Ki"), Some(1536));
        assert_eq!(parse_bytes("129e6"), Some(129_000_000));
        assert_eq!(parse_bytes("12XB"), None);
        assert_eq!(parse_cores("250m"), Some(0.25));
        assert_eq!(parse_cores("2"), Some(2.0));
        assert_eq!(parse_cores("-1"), None);
    }

    proptest::proptest! {
        #[test]
        fn quantity_parsers_never_panic(text in "\\PC{0,16}") {
            let _ = parse_bytes(&text);
            let _ = parse_cores(&text);
            let _ = parse_stat(&text);
        }
    }
}

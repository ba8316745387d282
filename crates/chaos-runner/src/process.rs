//! Processes by command line, PID or PID file, read from /proc, and the
//! signals a process fault sends. A PID is always paired with its start
//! time, so a PID the kernel reused for another process is never signalled.

use rustix::process::{Pid, Signal};

use crate::experiment::ProcessTarget;

/// A process found in /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// PID.
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
    /// State letter (R, S, T for stopped, Z…).
    pub state: char,
    /// The executable's file name (that of `argv[0]`).
    pub name: String,
    /// The command line, arguments joined by spaces.
    pub cmdline: String,
}

/// Reads one process; `None` if it is gone.
pub fn read(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Fields after the name start at 3 (state); start time is field 22.
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let name =
        args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_owned()).unwrap_or_default();
    Some(Proc { pid, start_time, state, name, cmdline: args.join(" ") })
}

/// Whether the process is still the one recorded (same start time).
pub fn same(pid: u32, start_time: u64) -> Option<Proc> {
    read(pid).filter(|p| p.start_time == start_time)
}

/// The PIDs of this process and its ancestors: never a target.
fn protected() -> Vec<u32> {
    let mut list = vec![1];
    let mut pid = std::process::id();
    for _ in 0..64 {
        list.push(pid);
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { break };
        let Some(close) = stat.rfind(')') else { break };
        let parent = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse().ok());
        match parent {
            Some(p) if p > 1 => pid = p,
            _ => break,
        }
    }
    list
}

/// The processes `target` names (never this one, its ancestors or PID 1),
/// each allowed by `allow` (executable file names). Errors name what
/// matched nothing or is not allowed.
pub fn resolve(target: &ProcessTarget, allow: &[String]) -> Result<Vec<Proc>, String> {
    let found = find(target)?;
    if let Some(p) = found.iter().find(|p| !allow.contains(&p.name)) {
        return Err(format!(
            "PID {} ({}) is not allowed: add `{}` to allow.processes",
            p.pid, p.cmdline, p.name
        ));
    }
    Ok(found)
}

/// The processes `target` names, without the allow-list (for probes, which
/// only look). Errors name what matched nothing.
pub fn find(target: &ProcessTarget) -> Result<Vec<Proc>, String> {
    let protected = protected();
    let found: Vec<Proc> = if let Some(pattern) = &target.matches {
        let mut list = Vec::new();
        let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if protected.contains(&pid) {
                continue;
            }
            if let Some(p) = read(pid)
                && p.cmdline.contains(pattern.as_str())
                && p.state != 'Z'
            {
                list.push(p);
            }
        }
        list.sort_by_key(|p| p.pid);
        if list.is_empty() {
            return Err(format!("no process has `{pattern}` in its command line"));
        }
        list
    } else {
        let pid = match (&target.pid, &target.pid_file) {
            (Some(pid), _) => *pid,
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("pid file {file}: {e}"))?
                .trim()
                .parse()
                .map_err(|_| format!("pid file {file}: not a PID"))?,
            (None, None) => return Err("no process named: give match, pid or pid_file".to_owned()),
        };
        if protected.contains(&pid) {
            return Err(format!("PID {pid} is this runner, one of its parents or init: refused"));
        }
        vec![read(pid).ok_or_else(|| format!("no process with PID {pid}"))?]
    };
    Ok(found)
}

/// Sends `signal` to `pid` if it is still the process started at `start_time`.
/// A process that is gone counts as done; returns whether it was signalled.
pub fn signal(pid: u32, start_time: u64, signal: Signal) -> Result<bool, String> {
    if same(pid, start_time).is_none() {
        return Ok(false);
    }
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or("bad PID")?;
    match rustix::process::kill_process(raw, signal) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(format!("cannot signal PID {pid}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_back_and_is_never_a_target() {
        let me = read(std::process::id()).unwrap();
        assert!(me.start_time > 0);
        assert!(same(me.pid, me.start_time).is_some());
        assert!(same(me.pid, me.start_time + 1).is_none());
        let target = ProcessTarget { matches: None, pid: Some(me.pid), pid_file: None };
        let err = resolve(&target, std::slice::from_ref(&me.name)).unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }

    #[test]
    fn a_process_outside_the_allow_list_is_refused() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // Until the child has exec'd, /proc shows the test binary's command line.
        while read(child.id()).is_none_or(|p| p.name != "sleep") {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let target = ProcessTarget { matches: None, pid: Some(child.id()), pid_file: None };
        let err = resolve(&target, &["sandbox".to_owned()]).unwrap_err();
        assert!(err.contains("add `sleep` to allow.processes"), "{err}");
        let found = resolve(&target, &["sleep".to_owned()]).unwrap();
        assert_eq!(found[0].pid, child.id());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

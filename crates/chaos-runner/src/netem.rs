//! Kernel network faults (`tc netem` delay, jitter and loss, and `tc`
//! filters dropping a port) on a veth pair between the host and a network
//! namespace the runner creates. A client run inside the namespace
//! (`ip netns exec NAME …`) reaches the host at [`Link::host_addr`] through
//! the degraded link; the host reaches it at [`Link::ns_addr`].
//!
//! Needs root (CAP_NET_ADMIN) and iproute2's `ip` and `tc`.

use std::process::Command;
use std::time::Duration;

/// The veth pair of a runner-made namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The namespace.
    pub netns: String,
    /// Host-side device (its egress is what netem delays: host → namespace).
    pub host_device: String,
    /// Namespace-side device.
    pub ns_device: String,
    /// Host-side address.
    pub host_addr: String,
    /// Namespace-side address.
    pub ns_addr: String,
}

/// Checks a namespace name: 1 to 11 of `a-z 0-9 -` (device names add 2).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 11
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok { Ok(()) } else { Err(format!("netns `{name}`: 1 to 11 of a-z, 0-9 and -")) }
}

/// The link of namespace `name` (whether or not it exists yet).
pub fn link(name: &str) -> Link {
    // 10.250.X.0/30 with X from the name, so each namespace has its own pair.
    let x = name.bytes().fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 250;
    Link {
        netns: name.to_owned(),
        host_device: format!("{name}-h"),
        ns_device: format!("{name}-n"),
        host_addr: format!("10.250.{x}.1"),
        ns_addr: format!("10.250.{x}.2"),
    }
}

fn run(args: &[&str]) -> Result<String, String> {
    let (program, rest) = args.split_first().ok_or("empty command")?;
    let out = Command::new(program)
        .args(rest)
        .output()
        .map_err(|e| format!("cannot run {program}: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    run(&["ip", "netns", "list"])
        .is_ok_and(|out| out.lines().any(|l| l.split_whitespace().next() == Some(name)))
}

/// Creates namespace `name` with its veth pair and addresses, if absent.
pub fn create(name: &str) -> Result<Link, String> {
    check_name(name)?;
    let l = link(name);
    if exists(name) {
        return Ok(l);
    }
    run(&["ip", "netns", "add", name])?;
    let result = (|| {
        run(&["ip", "link", "add", &l.host_device, "type", "veth", "peer", "name", &l.ns_device])?;
        run(&["ip", "link", "set", &l.ns_device, "netns", name])?;
        run(&["ip", "addr", "add", &format!("{}/30", l.host_addr), "dev", &l.host_device])?;
        run(&["ip", "link", "set", &l.host_device, "up"])?;
        run(&["ip", "-n", name, "addr", "add", &format!("{}/30", l.ns_addr), "dev", &l.ns_device])?;
        run(&["ip", "-n", name, "link", "set", &l.ns_device, "up"])?;
        run(&["ip", "-n", name, "link", "set", "lo", "up"])
    })();
    if let Err(e) = result {
        let _ = delete(name);
        return Err(e);
    }
    Ok(l)
}

/// Deletes namespace `name` and its veth pair (absent is fine).
pub fn delete(name: &str) -> Result<(), String> {
    let l = link(name);
    let _ = run(&["ip", "link", "del", &l.host_device]);
    if exists(name) {
        run(&["ip", "netns", "del", name])?;
    }
    Ok(())
}

/// Applies delay ± jitter and loss on the host side's egress, and drops
/// TCP packets to `drop_ports` arriving from the namespace.
pub fn apply(
    name: &str,
    delay: Option<Duration>,
    jitter: Option<Duration>,
    loss: Option<f64>,
    drop_ports: &[u16],
) -> Result<(), String> {
    let l = create(name)?;
    if delay.is_some() || loss.is_some() {
        let mut args = vec!["tc", "qdisc", "replace", "dev", &l.host_device, "root", "netem"];
        let delay_text = delay.map(|d| format!("{}us", d.as_micros()));
        let jitter_text = jitter.map(|j| format!("{}us", j.as_micros()));
        let loss_text = loss.map(|p| format!("{p}%"));
        if let Some(d) = &delay_text {
            args.extend(["delay", d.as_str()]);
            if let Some(j) = &jitter_text {
                args.push(j.as_str());
            }
        }
        if let Some(p) = &loss_text {
            args.extend(["loss", p.as_str()]);
        }
        run(&args)?;
    }
    if !drop_ports.is_empty() {
        let _ = run(&["tc", "qdisc", "add", "dev", &l.host_device, "ingress"]);
        for port in drop_ports {
            let port = port.to_string();
            run(&[
                "tc",
                "filter",
                "add",
                "dev",
                &l.host_device,
                "parent",
                "ffff:",
                "protocol",
                "ip",
                "u32",
                "match",
                "ip",
                "protocol",
                "6",
                "0xff",
                "match",
                "ip",
                "dport",
                &port,
                "0xffff",
                "action",
                "drop",
            ])?;
        }
    }
    Ok(())
}

/// Removes every netem qdisc and drop filter from the namespace's link
/// (idempotent: nothing there is fine).
pub fn clear(device: &str) -> Result<(), String> {
    let qdiscs = match run(&["tc", "qdisc", "show", "dev", device]) {
        Ok(out) => out,
        // The device is gone (the namespace was deleted): nothing is applied.
        Err(_) => return Ok(()),
    };
    if qdiscs.contains("netem") {
        run(&["tc", "qdisc", "del", "dev", device, "root"])?;
    }
    if qdiscs.contains("ingress") {
        run(&["tc", "qdisc", "del", "dev", device, "ingress"])?;
    }
    Ok(())
}

/// What `tc` shows on the device: netem or filters still applied.
pub fn applied(device: &str) -> Result<bool, String> {
    let qdiscs = run(&["tc", "qdisc", "show", "dev", device])?;
    Ok(qdiscs.contains("netem") || qdiscs.contains("ingress"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links_are_checked_and_stable() {
        assert!(check_name("pl-db").is_ok());
        for bad in ["", "Upper", "waytoolongname", "a b", "x/y"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let l = link("pl-db");
        assert_eq!(l.host_device, "pl-db-h");
        assert_eq!(link("pl-db"), l);
        assert!(l.host_addr.starts_with("10.250.") && l.host_addr.ends_with(".1"));
    }
}

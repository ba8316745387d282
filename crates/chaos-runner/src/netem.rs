//! Kernel network faults on a veth pair between the host and a network
//! namespace the runner creates: `tc netem` delay and jitter on the host
//! side's egress (host → namespace), and nftables rules for loss
//! (`numgen random`) and dropped TCP ports (the launch plan's "cut database
//! connections") on what arrives from the namespace. A client run inside the
//! namespace (`ip netns exec NAME …`) reaches the host at
//! [`Link::host_addr`] through the degraded link.
//!
//! Needs root (CAP_NET_ADMIN), iproute2's `ip` and `tc`, and `nft`. A kernel
//! built without `sch_netem` (some VM kernels) cannot delay packets: the
//! fault then fails with that reason and nothing is left applied; the fault
//! proxy's latency toxic is the way to add latency there.

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

/// The nftables table holding a namespace's drop rules.
fn table(name: &str) -> String {
    format!("postlaunch_chaos_{}", name.replace('-', "_"))
}

/// Applies delay ± jitter (netem) on the host side's egress, and loss and
/// dropped TCP ports (nftables) on what arrives from the namespace.
pub fn apply(
    name: &str,
    delay: Option<Duration>,
    jitter: Option<Duration>,
    loss: Option<f64>,
    drop_ports: &[u16],
) -> Result<(), String> {
    let l = create(name)?;
    if let Some(d) = delay {
        let delay_text = format!("{}us", d.as_micros());
        let jitter_text = jitter.map(|j| format!("{}us", j.as_micros()));
        let mut args = vec![
            "tc",
            "qdisc",
            "replace",
            "dev",
            &l.host_device,
            "root",
            "netem",
            "delay",
            &delay_text,
        ];
        if let Some(j) = &jitter_text {
            args.push(j.as_str());
        }
        run(&args).map_err(|e| {
            if e.contains("qdisc kind is unknown") {
                "this kernel has no sch_netem (tc netem): packets cannot be delayed here; use a proxy latency toxic instead".to_owned()
            } else {
                e
            }
        })?;
    }
    if loss.is_some() || !drop_ports.is_empty() {
        let t = table(name);
        let mut rules = format!(
            "table inet {t} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n"
        );
        if !drop_ports.is_empty() {
            let ports: Vec<String> = drop_ports.iter().map(u16::to_string).collect();
            rules.push_str(&format!(
                "    iifname \"{}\" tcp dport {{ {} }} drop\n",
                l.host_device,
                ports.join(", ")
            ));
        }
        if let Some(p) = loss {
            let p = p.round().clamp(0.0, 100.0) as u32;
            rules.push_str(&format!(
                "    iifname \"{}\" numgen random mod 100 < {p} drop\n",
                l.host_device
            ));
        }
        rules.push_str("  }\n}\n");
        nft_load(&rules)?;
    }
    Ok(())
}

fn nft_load(rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e} (install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft -f failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Removes the netem qdisc and the drop rules of the namespace whose host
/// device is `device` (idempotent: nothing there is fine).
pub fn clear(device: &str) -> Result<(), String> {
    let name = device.strip_suffix("-h").unwrap_or(device);
    if let Ok(qdiscs) = run(&["tc", "qdisc", "show", "dev", device])
        && qdiscs.contains("netem")
    {
        run(&["tc", "qdisc", "del", "dev", device, "root"])?;
    }
    let t = table(name);
    if run(&["nft", "list", "table", "inet", &t]).is_ok() {
        run(&["nft", "delete", "table", "inet", &t])?;
    }
    Ok(())
}

/// Whether a netem qdisc or drop rules are in force on the namespace.
pub fn applied(name: &str) -> bool {
    let l = link(name);
    let netem =
        run(&["tc", "qdisc", "show", "dev", &l.host_device]).is_ok_and(|q| q.contains("netem"));
    netem || run(&["nft", "list", "table", "inet", &table(name)]).is_ok()
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

//! Pod and Service addresses, and their loopback twins.
//!
//! The API server refuses loopback addresses in Endpoints ("may not be in the
//! loopback range"), so pods and Services get addresses from the
//! benchmarking range 198.18.0.0/15, which carries no traffic here: a cluster
//! in slot `k` has its Service IPs in 198.18.k.0/24 (the API server's
//! `--service-cluster-ip-range`) and its pod IPs in 198.19.k.0/24. Nothing
//! dials those: each has a *loopback twin*, the same address with the first
//! octet 127 (`198.19.3.7` → `127.19.3.7`), where the pod's process listens
//! and the Service proxy accepts. Linux routes all of 127.0.0.0/8 to `lo`,
//! so the twins need no set-up. While a node runs, an `unreachable` route
//! covers its ranges, so a mistaken dial of a pod IP fails here at once.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The loopback twin of a pod or Service address: `198.18.a.b` and
/// `198.19.a.b` map to `127.18.a.b` and `127.19.a.b`; anything else is not
/// ours and has no twin (the proxy never forwards to it).
pub fn loopback_twin(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    let [a, b, c, d] = ip.octets();
    (a == 198 && (b == 18 || b == 19)).then_some(Ipv4Addr::new(127, b, c, d))
}

/// A `/24` of pod IPs, `198.19.SLOT.0/24`.
#[derive(Debug)]
pub struct PodIps {
    slot: u8,
    in_use: BTreeSet<u8>,
    next: u8,
}

impl PodIps {
    /// The pod range of cluster slot `slot`.
    pub fn new(slot: u8) -> PodIps {
        PodIps { slot, in_use: BTreeSet::new(), next: 1 }
    }

    /// `198.19.SLOT.0/24`, the Node's `spec.podCIDR`.
    pub fn cidr(&self) -> String {
        format!("198.19.{}.0/24", self.slot)
    }

    /// The next free address (`.1` to `.254`, in turn, so a deleted pod's IP
    /// is not handed out again at once); `None` when all 254 are taken.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        for _ in 0..254 {
            let host = self.next;
            self.next = if self.next >= 254 { 1 } else { self.next + 1 };
            if self.in_use.insert(host) {
                return Some(Ipv4Addr::new(198, 19, self.slot, host));
            }
        }
        None
    }

    /// Gives an address back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        let [a, b, c, d] = ip.octets();
        if a == 198 && b == 19 && c == self.slot {
            self.in_use.remove(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_map_only_the_benchmarking_range() {
        assert_eq!(loopback_twin(Ipv4Addr::new(198, 19, 3, 7)), Some(Ipv4Addr::new(127, 19, 3, 7)));
        assert_eq!(loopback_twin(Ipv4Addr::new(198, 18, 3, 1)), Some(Ipv4Addr::new(127, 18, 3, 1)));
        assert_eq!(loopback_twin(Ipv4Addr::new(198, 20, 0, 1)), None);
        assert_eq!(loopback_twin(Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn addresses_are_unique_until_released_and_run_out_at_254() {
        let mut ips = PodIps::new(5);
        let first = ips.allocate().unwrap();
        assert_eq!(first, Ipv4Addr::new(198, 19, 5, 1));
        let mut all = vec![first];
        while let Some(ip) = ips.allocate() {
            all.push(ip);
        }
        assert_eq!(all.len(), 254);
        ips.release(Ipv4Addr::new(198, 19, 5, 9));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(198, 19, 5, 9)));
        assert_eq!(ips.allocate(), None);
    }
}

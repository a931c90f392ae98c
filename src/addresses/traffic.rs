//! Packet counts: the nftables counters are cumulative per (device address, destination);
//! what telesink records are the deltas between two readings, named by device.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::nftables::Counted;
use super::PacketAction;

/// Packets from one device address to one address of a category, since the last reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficRow {
    /// The packets were sent between the previous reading (`since`) and this one (`time`).
    pub since: SystemTime,
    pub time: SystemTime,
    /// The device's name (the `client` label), or its address when nothing names it.
    pub client: Arc<str>,
    pub client_address: IpAddr,
    pub category: Arc<str>,
    pub address: IpAddr,
    pub packets: u64,
    pub action: PacketAction,
}

/// Where the deltas go besides the metrics (the query log).
pub trait TrafficSink: Send + Sync {
    fn traffic(&self, rows: &[TrafficRow]);
}

/// The previous reading of each counter.
#[derive(Debug)]
pub struct Readings {
    last: HashMap<(String, IpAddr, IpAddr), u64>,
    /// When the counters were last read (or created).
    pub at: SystemTime,
}

impl Default for Readings {
    fn default() -> Self {
        Readings {
            last: HashMap::new(),
            at: SystemTime::now(),
        }
    }
}

impl Readings {
    /// Forgets every reading (the table was rebuilt: its counters start again at 0).
    pub fn reset(&mut self) {
        self.last.clear();
        self.at = SystemTime::now();
    }

    /// The new packets of each counter since the last reading. A counter lower than last time
    /// is a new element (the old one timed out): all its packets are new.
    pub fn deltas(&mut self, now: Vec<Counted>) -> Vec<(Counted, u64)> {
        let mut next = HashMap::with_capacity(now.len());
        let mut out = Vec::new();
        for c in now {
            let key = (c.set.clone(), c.source, c.destination);
            let before = self.last.get(&key).copied().unwrap_or(0);
            let delta = if c.packets >= before {
                c.packets - before
            } else {
                c.packets
            };
            next.insert(key, c.packets);
            if delta > 0 {
                out.push((c, delta));
            }
        }
        self.last = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(src: &str, packets: u64) -> Counted {
        Counted {
            set: "telemetry_seen_v4".into(),
            source: src.parse().unwrap(),
            destination: "203.0.113.5".parse().unwrap(),
            packets,
        }
    }

    #[test]
    fn deltas_between_readings() {
        let mut r = Readings::default();
        let d = r.deltas(vec![c("192.0.2.50", 3)]);
        assert_eq!(d.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![3]);
        assert!(r.deltas(vec![c("192.0.2.50", 3)]).is_empty());
        let d = r.deltas(vec![c("192.0.2.50", 5), c("192.0.2.51", 1)]);
        assert_eq!(d.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![2, 1]);
        // The element expired and came back: its count started again.
        let d = r.deltas(vec![c("192.0.2.50", 2)]);
        assert_eq!(d.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![2]);
    }
}

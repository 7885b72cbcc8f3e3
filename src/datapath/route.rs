//! Longest-prefix-match over the few routes an appliance has (connected, static, default).

use std::net::Ipv4Addr;

use super::config::{EngineConfig, IfaceId};

#[derive(Clone, Copy, Debug)]
struct Entry {
    net: u32,
    mask: u32,
    iface: IfaceId,
    /// None: the destination is on-link.
    via: Option<Ipv4Addr>,
}

/// Routes sorted longest prefix first; an appliance has a handful, so a scan is fastest.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    entries: Vec<Entry>,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl RouteTable {
    pub fn from_config(cfg: &EngineConfig) -> Self {
        let mut v: Vec<(u8, Entry)> = Vec::new();
        for (i, ifc) in cfg.interfaces.iter().enumerate() {
            for n in &ifc.connected {
                let m = mask(n.prefix_len());
                v.push((
                    n.prefix_len(),
                    Entry {
                        net: u32::from(n.network()) & m,
                        mask: m,
                        iface: i as IfaceId,
                        via: None,
                    },
                ));
            }
            if let Some(gw) = ifc.gateway {
                v.push((
                    0,
                    Entry {
                        net: 0,
                        mask: 0,
                        iface: i as IfaceId,
                        via: Some(gw),
                    },
                ));
            }
        }
        for r in &cfg.routes {
            let m = mask(r.prefix.prefix_len());
            v.push((
                r.prefix.prefix_len(),
                Entry {
                    net: u32::from(r.prefix.network()) & m,
                    mask: m,
                    iface: r.iface,
                    via: Some(r.via),
                },
            ));
        }
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        RouteTable {
            entries: v.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// The interface and next hop toward `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<(IfaceId, Ipv4Addr)> {
        let d = u32::from(dst);
        self.entries
            .iter()
            .find(|e| d & e.mask == e.net)
            .map(|e| (e.iface, e.via.unwrap_or(dst)))
    }
}

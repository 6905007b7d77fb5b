//! The loopback ports a pipeline listens on, chosen once for its whole life (a restarted
//! process comes back at the same address) and all at once, so that no two tiers get the same.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;

/// The ports one pipeline listens on, all chosen while every probe socket is still bound, so
/// no two are the same.
pub struct Ports {
    /// redis-server's.
    pub redis: SocketAddr,
    /// Each node's WebSocket/HTTP address and its metrics address.
    pub nodes: Vec<(SocketAddr, SocketAddr)>,
    /// redis-ws-bridge's.
    pub bridge: SocketAddr,
    /// data-feeder's control API.
    pub feeder: SocketAddr,
}

impl Ports {
    /// Free loopback ports for redis-server, `nodes` topic-servers (two each), the bridge and
    /// the feeder's control API.
    pub fn choose(nodes: usize) -> anyhow::Result<Self> {
        let mut addrs = free_addrs(3 + 2 * nodes)?.into_iter();
        let mut next = || addrs.next().context("too few ports chosen");
        let redis = next()?;
        let bridge = next()?;
        let feeder = next()?;
        let nodes = (0..nodes)
            .map(|_| Ok((next()?, next()?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            redis,
            nodes,
            bridge,
            feeder,
        })
    }
}

/// `count` distinct loopback addresses free right now: the probe listeners stay bound until
/// all are chosen, so the kernel cannot hand out one port twice.
fn free_addrs(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let probes = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding a probe socket"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    probes
        .iter()
        .map(|probe| probe.local_addr().context("a probe socket's address"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_of_a_cluster_are_all_different() {
        let ports = Ports::choose(3).expect("ports");
        let mut all = vec![ports.redis, ports.bridge, ports.feeder];
        all.extend(
            ports
                .nodes
                .iter()
                .flat_map(|(addr, metrics)| [*addr, *metrics]),
        );
        assert_eq!(all.len(), 9);
        let distinct: std::collections::HashSet<_> = all.iter().map(SocketAddr::port).collect();
        assert_eq!(distinct.len(), 9, "{all:?}");
    }
}

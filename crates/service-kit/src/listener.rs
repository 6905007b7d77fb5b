//! Listening sockets with an explicit accept backlog.
//!
//! `TcpListener::bind` asks the kernel for a fixed backlog. When thousands of clients connect
//! at once — every client of a load balancer that just restarted — a short queue overflows,
//! the kernel drops the extra handshakes and the clients retry a second or more later. Servers
//! that face such bursts bind through [`bind_with_backlog`] and let the operator size the queue
//! (the kernel still caps it at `net.core.somaxconn`).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Accept queue length servers ask for unless configured otherwise: enough for ten thousand
/// clients arriving within a few milliseconds on this class of machine (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default on current Linux).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (address reuse on, as `TcpListener::bind` does on Unix) and listens with room
/// for `backlog` connections waiting to be accepted.
pub fn bind_with_backlog(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

/// The kernel's cap on any listen backlog (`net.core.somaxconn`), when it can be read: a
/// server logs it when the configured backlog is larger, since the larger figure has no effect.
pub fn kernel_backlog_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_and_accepts_a_burst_larger_than_the_old_backlog() {
        let listener = bind_with_backlog("127.0.0.1:0".parse().unwrap(), 2048).unwrap();
        let addr = listener.local_addr().unwrap();
        // 1,500 connections complete their handshakes before a single accept: all of them
        // wait in the queue (with a backlog of 128 most would be dropped and retried).
        let mut clients = Vec::new();
        for _ in 0..1500 {
            let connect = tokio::net::TcpStream::connect(addr);
            let client = tokio::time::timeout(std::time::Duration::from_millis(500), connect)
                .await
                .expect("a connection attempt waited: the accept queue overflowed")
                .unwrap();
            clients.push(client);
        }
        for _ in 0..1500 {
            let (_stream, _) = listener.accept().await.unwrap();
        }
    }

    #[test]
    fn the_kernel_cap_is_readable_here() {
        assert!(kernel_backlog_cap().is_some_and(|cap| cap > 0));
    }
}

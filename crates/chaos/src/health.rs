//! Whether a tier answers as its operator would check it: `GET /healthz` for the HTTP tiers,
//! `PING` for redis-server. Plain TCP with short timeouts, so a paused or dead tier shows as
//! "not answering" instead of stalling the driver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pipeline::Health;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks `health` until it answers or `within` has passed; `Err` says what it last answered.
pub async fn answers(health: Health, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let result = probe(health).await;
        if result.is_ok() || Instant::now() >= deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One probe.
async fn probe(health: Health) -> Result<(), String> {
    match health {
        Health::Running => Ok(()),
        Health::Http(addr) => {
            let request =
                format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
            let answer = exchange(addr, request.as_bytes()).await?;
            let status = answer.split(' ').nth(1).unwrap_or("");
            if status.starts_with('2') {
                Ok(())
            } else {
                Err(format!("/healthz answered {:?}", first_line(&answer)))
            }
        }
        Health::RedisPing(addr) => {
            let answer = exchange(addr, b"PING\r\n").await?;
            if answer.starts_with("+PONG") {
                Ok(())
            } else {
                Err(format!("PING answered {:?}", first_line(&answer)))
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Sends `request` and reads the answer's first bytes (up to 4 KiB, or until the peer closes).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<String, String> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.write_all(request).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        // Until a whole first line has arrived (or the buffer is full, or the peer closed).
        while len < buf.len() && !buf[..len].contains(&b'\n') {
            let n = stream
                .read(&mut buf[len..])
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            len += n;
        }
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .map_err(|_| format!("no answer from {addr} within {PROBE_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_does_not_answer() {
        let port = service_kit::testing::free_port().expect("a port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(answers(Health::Http(addr), Duration::ZERO).await.is_err());
        assert!(answers(Health::Running, Duration::ZERO).await.is_ok());
    }

    #[tokio::test]
    async fn a_2xx_status_is_healthy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert_eq!(answers(Health::Http(addr), Duration::ZERO).await, Ok(()));
        assert!(answers(Health::Http(addr), Duration::ZERO).await.is_err());
    }
}

//! A publisher connection (`/publish`): every text frame is one message, `TOPIC\nPAYLOAD` or
//! a bare payload; each is framed once here and handed to the fan-out thread.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::fanout::{Command, Published};
use super::frame::Frame;
use super::route::split_published;

/// The message a published text frame stands for.
pub fn published(text: &[u8]) -> Published {
    let (topic, payload) = split_published(text);
    Published {
        topic: topic.map(Bytes::copy_from_slice),
        frame: Frame::text(payload),
    }
}

/// Reads the publisher's frames until it closes, the fan-out is gone or the server shuts
/// down; waits while the fan-out is behind (so a publisher faster than the subscribers is held
/// back by TCP instead of growing a queue here).
pub async fn serve(
    mut ws: WebSocketStream<TcpStream>,
    commands: &mpsc::Sender<Command>,
    shutdown: &CancellationToken,
) {
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let command = Command::Publish(published(text.as_bytes()));
                    if commands.send(command).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            () = shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}

//! One subscriber connection after its handshake: the socket the fan-out thread writes to, the
//! outbox that keeps what the socket could not take, and the task that reads what the client
//! sends (only a close matters) and flushes the outbox when the socket is writable again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Counters;
use super::frame::{CLOSE_FRAME, ClientFrames, Frame, Incoming};
use super::outbox::{Limits, Outbox, Outcome};
use super::route::Interest;

/// Bytes read from a client at a time (on the stack, only while reading).
const READ_CHUNK: usize = 1024;

/// A subscriber, shared by its task and the fan-out thread.
#[derive(Debug)]
pub struct Subscriber {
    stream: TcpStream,
    outbox: Mutex<Outbox>,
    /// Told when the outbox starts keeping bytes, or the subscriber is closed.
    wake: Notify,
    /// What it gets.
    pub interest: Interest,
    /// Its place in the fan-out's table (the fan-out thread's business).
    pub slot: AtomicU32,
}

impl Subscriber {
    /// A subscriber on `stream` (handshake done) with `interest`.
    pub fn new(stream: TcpStream, interest: Interest) -> Self {
        Self {
            stream,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            interest,
            slot: AtomicU32::new(u32::MAX),
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `frames` straight to the socket (from the fan-out thread), or queues them behind
    /// what is pending; wakes the task when the socket must be watched or the subscriber closed.
    pub fn deliver(
        &self,
        frames: &[&Frame],
        limits: &Limits,
        scratch: &mut Vec<Bytes>,
        counters: &Counters,
    ) {
        let mut outbox = self.outbox();
        let was_pending = outbox.is_pending();
        let was_closed = outbox.is_closed();
        let outcome = outbox.deliver(&self.stream, frames, limits, scratch);
        let skipped = outbox.take_skipped();
        let overflowed = outbox.overflowed();
        drop(outbox);
        if skipped > 0 {
            counters.skipped.fetch_add(skipped, Ordering::Relaxed);
        }
        match outcome {
            Outcome::Written => {}
            Outcome::Pending => {
                if !was_pending {
                    counters.fell_behind.fetch_add(1, Ordering::Relaxed);
                    self.wake.notify_one();
                }
            }
            Outcome::Closed => {
                if !was_closed {
                    if overflowed {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    self.wake.notify_one();
                }
            }
        }
    }

    /// Serves the connection until the client closes or goes away, a write fails, the
    /// subscriber falls too far behind, or the server shuts down (a close frame goes out).
    pub async fn serve(&self, limits: &Limits, shutdown: &CancellationToken) {
        let mut reader = ClientFrames::default();
        loop {
            let flushing = self.outbox().is_pending();
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.close_frame(limits);
                    return;
                }
                readable = self.stream.readable() => {
                    if readable.is_err() {
                        return;
                    }
                    match self.read(&mut reader) {
                        Read::More => {}
                        Read::Close => {
                            self.close_frame(limits);
                            return;
                        }
                        Read::End => return,
                    }
                }
                writable = self.stream.writable(), if flushing => {
                    if writable.is_err() {
                        return;
                    }
                    self.outbox().flush(&self.stream, limits);
                }
                () = self.wake.notified(), if !flushing => {}
            }
            if self.outbox().is_closed() {
                return;
            }
        }
    }

    /// Reads what the client sent so far (a stack buffer, so an idle connection keeps none).
    fn read(&self, reader: &mut ClientFrames) -> Read {
        let mut buf = [0; READ_CHUNK];
        loop {
            match self.stream.try_read(&mut buf) {
                Ok(0) => return Read::End,
                Ok(n) => match reader.feed(&buf[..n]) {
                    Incoming::Nothing => {}
                    Incoming::Close => return Read::Close,
                    Incoming::ProtocolError => return Read::End,
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Read::More,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Read::End,
            }
        }
    }

    /// Sends a close frame after whatever is pending, as far as the socket takes it now (a
    /// frame cut in the middle would be worse than none: then nothing is sent).
    fn close_frame(&self, limits: &Limits) {
        let mut outbox = self.outbox();
        if outbox.flush(&self.stream, limits) == Outcome::Written {
            let _ = self.stream.try_write(CLOSE_FRAME);
        }
        outbox.close();
    }
}

/// What reading found.
enum Read {
    /// Nothing that ends the connection.
    More,
    /// A close frame.
    Close,
    /// End of stream, an error, or a protocol error.
    End,
}

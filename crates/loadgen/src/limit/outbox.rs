//! A subscriber's outbound path: write straight to the socket while it keeps up, and only when
//! it does not (`WouldBlock`, a partial write) keep what is left, in order, until the socket
//! is writable again. An idle or keeping-up subscriber holds no buffer.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;

use super::frame::{self, Frame};

/// Where the bytes go: a non-blocking socket (a fake one in tests).
pub trait Sink {
    /// Writes what it can without blocking (`WouldBlock` when nothing).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl Sink for tokio::net::TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write_vectored(self, bufs)
    }
}

/// How far behind a subscriber may fall.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame built when packing queued messages.
    pub max_frame_bytes: usize,
    /// Messages queued (not yet framed) at most; the oldest beyond are skipped.
    pub queued_messages: usize,
    /// Bytes kept at most (framed and queued): beyond, the subscriber is closed.
    pub pending_bytes: usize,
}

/// What a delivery or a flush came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything went out.
    Written,
    /// Something is kept: the socket must be watched for writability.
    Pending,
    /// The subscriber is (now) closed: its write failed or it fell too far behind.
    Closed,
}

/// Segments per vectored write (well under the kernel's 1024).
const SEGMENTS_PER_WRITE: usize = 128;

/// One subscriber's outbound state.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Wire bytes already framed (the rest of a frame begun, then whole frames), in order.
    framed: VecDeque<Bytes>,
    /// Messages not framed yet (packed when the socket is writable again).
    queued: VecDeque<Frame>,
    /// Bytes in `framed` and `queued` together.
    bytes: usize,
    closed: bool,
    /// Closed because it fell further behind than `pending_bytes`.
    overflowed: bool,
    /// Messages skipped because more than `queued_messages` were queued.
    skipped: u64,
}

impl Outbox {
    /// Whether bytes wait for the socket to be writable.
    pub fn is_pending(&self) -> bool {
        !self.framed.is_empty() || !self.queued.is_empty()
    }

    /// Whether the subscriber was closed (write error, or too far behind).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether it was closed for falling too far behind.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Takes the count of messages skipped since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Marks the subscriber closed and drops whatever it had pending.
    pub fn close(&mut self) {
        self.closed = true;
        self.framed = VecDeque::new();
        self.queued = VecDeque::new();
        self.bytes = 0;
    }

    /// Delivers `frames` (in order): written straight away (packed into as few frames as the
    /// limit allows, one vectored write) when nothing is pending, else queued behind what is.
    /// `scratch` is the caller's, reused between deliveries.
    pub fn deliver(
        &mut self,
        sink: &impl Sink,
        frames: &[&Frame],
        limits: &Limits,
        scratch: &mut Vec<Bytes>,
    ) -> Outcome {
        if self.closed {
            return Outcome::Closed;
        }
        if self.is_pending() {
            self.queue(frames.iter().map(|f| (*f).clone()), limits);
            return self.state();
        }
        let segments: &[Bytes] = match frames {
            // The common case: written from the shared frame as it is (no reference taken, so
            // fan-out threads do not contend on its count).
            [one] => std::slice::from_ref(one.bytes()),
            _ => {
                scratch.clear();
                frame::pack(frames.iter().copied(), limits.max_frame_bytes, scratch);
                scratch
            }
        };
        let written = match write_all_or_some(sink, segments) {
            Ok(n) => n,
            Err(_) => {
                self.close();
                return Outcome::Closed;
            }
        };
        self.keep_unwritten(segments, written);
        self.check_bound(limits);
        self.state()
    }

    /// Writes what is pending until it is all out or the socket would block.
    pub fn flush(&mut self, sink: &impl Sink, limits: &Limits) -> Outcome {
        let mut scratch = Vec::new();
        while !self.closed && self.is_pending() {
            if self.framed.is_empty() {
                self.frame_queued(limits.max_frame_bytes);
            }
            scratch.clear();
            scratch.extend(self.framed.drain(..));
            let written = match write_all_or_some(sink, &scratch) {
                Ok(n) => n,
                Err(_) => {
                    self.close();
                    break;
                }
            };
            let total: usize = scratch.iter().map(Bytes::len).sum();
            self.bytes -= total.min(self.bytes);
            self.keep_unwritten(&scratch, written);
            if written < total {
                return self.state();
            }
        }
        if !self.is_pending() {
            // Release the buffers a burst grew.
            self.framed = VecDeque::new();
            self.queued = VecDeque::new();
            self.bytes = 0;
        }
        self.state()
    }

    fn state(&self) -> Outcome {
        if self.closed {
            Outcome::Closed
        } else if self.is_pending() {
            Outcome::Pending
        } else {
            Outcome::Written
        }
    }

    fn queue(&mut self, frames: impl Iterator<Item = Frame>, limits: &Limits) {
        for frame in frames {
            self.bytes += frame.payload_len() + 1;
            self.queued.push_back(frame);
        }
        while self.queued.len() > limits.queued_messages.max(1) {
            if let Some(oldest) = self.queued.pop_front() {
                self.bytes -= oldest.payload_len() + 1;
                self.skipped += 1;
            }
        }
        self.check_bound(limits);
    }

    fn check_bound(&mut self, limits: &Limits) {
        if self.bytes > limits.pending_bytes {
            self.close();
            self.overflowed = true;
        }
    }

    /// Keeps the segments from byte `written` on (sharing their memory).
    fn keep_unwritten(&mut self, segments: &[Bytes], mut written: usize) {
        for segment in segments {
            if written >= segment.len() {
                written -= segment.len();
                continue;
            }
            let rest = segment.slice(written..);
            written = 0;
            self.bytes += rest.len();
            self.framed.push_back(rest);
        }
    }

    /// Packs the queued messages into frames, moving them to `framed` (which is empty).
    fn frame_queued(&mut self, max_frame_bytes: usize) {
        let mut segments = Vec::new();
        frame::pack(self.queued.iter(), max_frame_bytes, &mut segments);
        self.queued.clear();
        self.framed.extend(segments);
        self.bytes = self.framed.iter().map(Bytes::len).sum();
    }
}

/// Writes `segments` with as few vectored writes as it takes; returns the bytes written, which
/// is less than their total when the socket would block.
fn write_all_or_some(sink: &impl Sink, segments: &[Bytes]) -> io::Result<usize> {
    let mut written = 0;
    let mut first = 0; // first segment not fully written
    let mut offset = 0; // bytes of it already written
    while first < segments.len() {
        let mut slices = [IoSlice::new(&[]); SEGMENTS_PER_WRITE];
        let mut count = 0;
        let mut asked = 0;
        for (i, segment) in segments[first..]
            .iter()
            .take(SEGMENTS_PER_WRITE)
            .enumerate()
        {
            let part = if i == 0 {
                &segment[offset..]
            } else {
                &segment[..]
            };
            slices[i] = IoSlice::new(part);
            asked += part.len();
            count = i + 1;
        }
        let n = match sink.try_write_vectored(&slices[..count]) {
            Ok(0) if asked > 0 => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        written += n;
        // Advance over what went out.
        let mut left = n + offset;
        while first < segments.len() && left >= segments[first].len() {
            left -= segments[first].len();
            first += 1;
        }
        offset = left;
        if n < asked {
            return Ok(written);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A socket that accepts `room` bytes, then blocks until given more room.
    #[derive(Default)]
    struct FakeSocket {
        room: RefCell<usize>,
        wire: RefCell<Vec<u8>>,
        fail: RefCell<bool>,
    }

    impl FakeSocket {
        fn with_room(room: usize) -> Self {
            Self {
                room: RefCell::new(room),
                ..Self::default()
            }
        }
    }

    impl Sink for FakeSocket {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if *self.fail.borrow() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let mut room = self.room.borrow_mut();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(*room);
                self.wire.borrow_mut().extend_from_slice(&buf[..take]);
                *room -= take;
                n += take;
            }
            Ok(n)
        }
    }

    const LIMITS: Limits = Limits {
        max_frame_bytes: 1024,
        queued_messages: 100,
        pending_bytes: 10_000,
    };

    fn frames(payloads: &[&str]) -> Vec<Frame> {
        payloads.iter().map(|p| Frame::text(p.as_bytes())).collect()
    }

    /// The payloads of the text frames on `wire`, split at `\n`.
    fn messages(wire: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = wire;
        while !rest.is_empty() {
            assert_eq!(rest[0], 0x81);
            let (len, header) = match rest[1] {
                126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                127 => panic!("no huge frames here"),
                n => (usize::from(n), 2),
            };
            let payload = &rest[header..header + len];
            out.extend(
                String::from_utf8(payload.to_vec())
                    .unwrap()
                    .split('\n')
                    .map(str::to_owned),
            );
            rest = &rest[header + len..];
        }
        out
    }

    #[test]
    fn a_subscriber_that_keeps_up_gets_each_message_directly() {
        let socket = FakeSocket::with_room(usize::MAX);
        let mut outbox = Outbox::default();
        let mut scratch = Vec::new();
        for frame in &frames(&["a", "b"]) {
            assert_eq!(
                outbox.deliver(&socket, &[frame], &LIMITS, &mut scratch),
                Outcome::Written
            );
        }
        assert_eq!(*socket.wire.borrow(), [0x81, 1, b'a', 0x81, 1, b'b']);
        assert!(!outbox.is_pending());
    }

    #[test]
    fn pending_bytes_keep_their_order_and_queued_messages_are_packed() {
        // Room for one frame and a half.
        let socket = FakeSocket::with_room(5);
        let mut outbox = Outbox::default();
        let mut scratch = Vec::new();
        let all = frames(&["one", "two", "three", "four", "five"]);
        assert_eq!(
            outbox.deliver(&socket, &[&all[0], &all[1]], &LIMITS, &mut scratch),
            Outcome::Pending
        );
        for frame in &all[2..] {
            assert_eq!(
                outbox.deliver(&socket, &[frame], &LIMITS, &mut scratch),
                Outcome::Pending
            );
        }
        // Writable again, a little at a time.
        loop {
            *socket.room.borrow_mut() = 3;
            if outbox.flush(&socket, &LIMITS) == Outcome::Written {
                break;
            }
        }
        assert_eq!(
            messages(&socket.wire.borrow()),
            ["one", "two", "three", "four", "five"]
        );
        assert_eq!(outbox.bytes, 0);
    }

    #[test]
    fn a_subscriber_too_far_behind_skips_the_oldest_then_is_closed() {
        let socket = FakeSocket::with_room(0);
        let limits = Limits {
            queued_messages: 2,
            pending_bytes: 40,
            ..LIMITS
        };
        let mut outbox = Outbox::default();
        let mut scratch = Vec::new();
        let all = frames(&["1", "2", "3", "4"]);
        for frame in &all {
            outbox.deliver(&socket, &[frame], &limits, &mut scratch);
        }
        // "1" was framed when the socket blocked; "2" was skipped for "3" and "4".
        assert_eq!(outbox.take_skipped(), 1);
        *socket.room.borrow_mut() = 100;
        assert_eq!(outbox.flush(&socket, &limits), Outcome::Written);
        assert_eq!(messages(&socket.wire.borrow()), ["1", "3", "4"]);

        *socket.room.borrow_mut() = 0;
        let big = Frame::text(&[b'x'; 50]);
        assert_eq!(
            outbox.deliver(&socket, &[&big], &limits, &mut scratch),
            Outcome::Closed
        );
        assert!(outbox.is_closed());
        assert!(!outbox.is_pending());
    }

    #[test]
    fn a_failed_write_closes_the_subscriber() {
        let socket = FakeSocket::with_room(10);
        *socket.fail.borrow_mut() = true;
        let mut outbox = Outbox::default();
        let all = frames(&["a"]);
        assert_eq!(
            outbox.deliver(&socket, &[&all[0]], &LIMITS, &mut Vec::new()),
            Outcome::Closed
        );
    }

    #[test]
    fn many_segments_take_several_writes() {
        let socket = FakeSocket::with_room(usize::MAX);
        let segments: Vec<Bytes> = (0..1000).map(|i| Bytes::from(format!("{i},"))).collect();
        let total: usize = segments.iter().map(Bytes::len).sum();
        assert_eq!(write_all_or_some(&socket, &segments).unwrap(), total);
        let expected: Vec<u8> = segments.iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(*socket.wire.borrow(), expected);
    }
}

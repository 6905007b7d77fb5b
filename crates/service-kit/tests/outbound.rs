//! The shared outbound path: the bounded queue's limits and closes, and the batching writer.

#![allow(clippy::unwrap_used)] // a test: failures should stop it

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Sink;
use service_kit::outbound::{
    BoundedQueue, Closing, Push, QueueLimits, WriterEnd, run_writer, write_all,
};

type Queue = BoundedQueue<String, &'static str>;

fn queue(messages: usize, bytes: usize) -> Queue {
    BoundedQueue::new(QueueLimits { messages, bytes }, String::len, "too slow")
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[test]
fn message_limit_overflows_and_drops_the_backlog() {
    let q = queue(2, 1000);
    assert_eq!(q.push(s("a")), Push::Queued);
    assert_eq!(q.push(s("b")), Push::Queued);
    assert_eq!(q.push(s("c")), Push::Overflowed);
    assert!(q.is_empty());
    assert_eq!(q.push(s("d")), Push::Closed);
    let mut batch = Vec::new();
    assert_eq!(q.take(&mut batch), Some(Closing::Send("too slow")));
    assert!(batch.is_empty());
}

#[test]
fn byte_limit_overflows_but_a_lone_big_message_is_accepted() {
    let q = queue(100, 4);
    assert_eq!(q.push(s("0123456789")), Push::Queued);
    assert_eq!(q.push(s("x")), Push::Overflowed);

    let q = queue(100, 4);
    assert_eq!(q.push(s("ab")), Push::Queued);
    assert_eq!(q.push(s("cd")), Push::Queued);
    assert_eq!(q.push(s("e")), Push::Overflowed);
}

#[test]
fn take_drains_in_order_and_frees_room() {
    let q = queue(2, 1000);
    q.push(s("a"));
    q.push(s("b"));
    let mut batch = Vec::new();
    assert_eq!(q.take(&mut batch), None);
    assert_eq!(batch, vec![s("a"), s("b")]);
    assert_eq!(q.push(s("c")), Push::Queued);
}

#[test]
fn first_close_wins_and_keeps_the_backlog() {
    let q = queue(10, 1000);
    q.push(s("a"));
    assert!(q.close("shutting down"));
    assert!(!q.close("too big"));
    let mut batch = Vec::new();
    assert_eq!(q.take(&mut batch), Some(Closing::Send("shutting down")));
    assert_eq!(batch, vec![s("a")]);
}

#[test]
fn a_quiet_close_drops_the_backlog() {
    let q = queue(10, 1000);
    q.push(s("a"));
    q.close_quietly();
    let mut batch = Vec::new();
    assert_eq!(q.take(&mut batch), Some(Closing::Quiet));
    assert!(batch.is_empty());
}

/// What a [`Recorder`] has seen.
#[derive(Debug, Default)]
struct Record {
    frames: Vec<String>,
    flushes: usize,
}

/// A sink that records frames and flushes; optionally stuck (never ready) or failing.
#[derive(Debug, Clone, Default)]
struct Recorder {
    record: Arc<Mutex<Record>>,
    stuck: bool,
    failing: bool,
}

impl Sink<String> for Recorder {
    type Error = &'static str;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match (self.stuck, self.failing) {
            (true, _) => Poll::Pending,
            (_, true) => Poll::Ready(Err("broken pipe")),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn start_send(self: Pin<&mut Self>, frame: String) -> Result<(), Self::Error> {
        self.record.lock().unwrap().frames.push(frame);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.record.lock().unwrap().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Packs every two messages into one frame, joined by a newline.
fn pack_pairs(items: &mut Vec<String>, frames: &mut Vec<String>) {
    for pair in std::mem::take(items).chunks(2) {
        frames.push(pair.join("\n"));
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_writer_packs_each_batch_feeds_it_all_and_flushes_once() {
    let q = queue(100, 1000);
    for m in ["a", "b", "c"] {
        q.push(s(m));
    }
    let mut sink = Recorder::default();
    let record = sink.record.clone();
    let control = async {
        service_kit::testing::wait_until(WAIT, || async { record.lock().unwrap().flushes == 1 })
            .await
            .unwrap();
        q.push(s("d"));
        q.close("bye");
    };
    let mut drain = &q;
    let mut batch = Vec::new();
    let (end, ()) = tokio::time::timeout(
        WAIT,
        futures_util::future::join(
            run_writer(&mut sink, &mut drain, &mut batch, pack_pairs),
            control,
        ),
    )
    .await
    .unwrap();
    let record = record.lock().unwrap();
    assert_eq!(record.frames, vec![s("a\nb"), s("c")]);
    assert_eq!(record.flushes, 1);
    // The close came with "d" still due: left for the caller to send before its close.
    assert_eq!(end, WriterEnd::Closing(Closing::Send("bye")));
    assert_eq!(batch, vec![s("d")]);
}

#[tokio::test]
async fn a_write_stuck_on_a_slow_socket_is_abandoned_when_the_queue_closes() {
    let q = queue(100, 1000);
    q.push(s("a"));
    let mut sink = Recorder {
        stuck: true,
        ..Recorder::default()
    };
    let control = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Overflow closes the connection and interrupts the stuck write.
        for _ in 0..200 {
            q.push(s("x"));
        }
    };
    let mut drain = &q;
    let mut batch = Vec::new();
    let (end, ()) = tokio::time::timeout(
        WAIT,
        futures_util::future::join(
            run_writer(&mut sink, &mut drain, &mut batch, pack_pairs),
            control,
        ),
    )
    .await
    .expect("the stuck write was abandoned");
    assert_eq!(end, WriterEnd::Closing(Closing::Send("too slow")));
    assert!(batch.is_empty());
}

#[tokio::test]
async fn a_failing_socket_ends_the_writer() {
    let q = queue(100, 1000);
    q.push(s("a"));
    let mut sink = Recorder {
        failing: true,
        ..Recorder::default()
    };
    let mut drain = &q;
    let mut batch = Vec::new();
    let end = tokio::time::timeout(
        WAIT,
        run_writer(&mut sink, &mut drain, &mut batch, pack_pairs),
    )
    .await
    .unwrap();
    assert_eq!(end, WriterEnd::Failed("broken pipe"));
}

#[tokio::test]
async fn write_all_flushes_once() {
    let mut sink = Recorder::default();
    write_all(&mut sink, [s("a"), s("b")]).await.unwrap();
    let record = sink.record.lock().unwrap();
    assert_eq!(record.frames, vec![s("a"), s("b")]);
    assert_eq!(record.flushes, 1);
}

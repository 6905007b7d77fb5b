//! The one task that hands a node's changes to Redis: in the order they were queued, as many
//! as are waiting in one round trip (a pipeline of update-script calls, which Redis runs in
//! that order; on a Redis Cluster, one pipeline per run of calls to the same partition, since
//! a pipeline may not cross slots). Sessions queue their changes one after another and wait for the answers
//! elsewhere, so a session's stream of `set`s is pipelined without ever being reordered —
//! the order is the queue's, not that of whichever future happens to be polled first.

use std::time::Duration;

use diffusion_core::protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::keys::StreamKeys;
use super::link::Commands;
use super::message::ScriptCall;
use super::{UPDATE_SCRIPT, internal, unavailable};
use crate::engine::OpError;

/// Calls waiting for the submitter (a session waits for room beyond this).
const QUEUE: usize = 1_024;
/// Most calls in one round trip.
const MAX_BATCH: usize = 256;

/// What Redis said to one call: the partition's number after it, and whether the change was
/// made (or was unchanged) or refused.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub seq: u64,
    pub outcome: Result<(), OpError>,
}

/// Redis's answer to one queued call.
pub(crate) type Answer = oneshot::Receiver<Result<Accepted, OpError>>;

struct Submission {
    call: ScriptCall,
    answer: oneshot::Sender<Result<Accepted, OpError>>,
}

/// The queue into the submitter task.
pub(crate) struct Submitter {
    queue: mpsc::Sender<Submission>,
}

impl Submitter {
    /// Starts the task; it ends with `stop`.
    pub fn start(
        commands: Commands,
        sharded: bool,
        log_length: usize,
        timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        let (queue, calls) = mpsc::channel(QUEUE);
        tokio::spawn(run(calls, commands, sharded, log_length, timeout, stop));
        Self { queue }
    }

    /// Queues `call`: calls queued one after another reach Redis in that order. Waits only
    /// for room in the queue; the answer comes on the returned receiver.
    pub async fn queue(&self, call: ScriptCall) -> Result<Answer, OpError> {
        let (answer, receiver) = oneshot::channel();
        self.queue
            .send(Submission { call, answer })
            .await
            .map_err(|_| unavailable("the node is shutting down"))?;
        Ok(receiver)
    }
}

async fn run(
    mut calls: mpsc::Receiver<Submission>,
    mut commands: Commands,
    sharded: bool,
    log_length: usize,
    timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            next = calls.recv() => match next {
                Some(submission) => submission,
                None => return,
            },
        };
        let mut batch = vec![first];
        // On a Redis Cluster a pipeline stays within one partition (one slot).
        while batch.len() < MAX_BATCH {
            match calls.try_recv() {
                Ok(submission) => {
                    if sharded && submission.call.stream != batch[0].call.stream {
                        send_batch(batch, &mut commands, sharded, log_length, timeout).await;
                        batch = Vec::new();
                    }
                    batch.push(submission);
                }
                Err(_) => break,
            }
        }
        send_batch(batch, &mut commands, sharded, log_length, timeout).await;
    }
}

/// Sends `batch` as one pipeline and hands each call its answer.
async fn send_batch(
    batch: Vec<Submission>,
    commands: &mut Commands,
    sharded: bool,
    log_length: usize,
    timeout: Duration,
) {
    {
        let mut pipe = redis::pipe();
        for submission in &batch {
            pipe.add_command(script_call(&submission.call, sharded, log_length));
        }
        let replies: Result<Vec<Vec<redis::Value>>, OpError> =
            match tokio::time::timeout(timeout, pipe.query_async(commands)).await {
                Ok(Ok(replies)) => Ok(replies),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cluster: Redis refused or failed a change");
                    Err(unavailable(&error.to_string()))
                }
                Err(_) => Err(unavailable("it did not answer in time")),
            };
        match replies {
            Ok(replies) if replies.len() == batch.len() => {
                for (submission, reply) in batch.into_iter().zip(replies) {
                    let accepted = read_answer(&submission.call, &reply);
                    let _ = submission.answer.send(Ok(accepted));
                }
            }
            Ok(_) => {
                for submission in batch {
                    let _ = submission
                        .answer
                        .send(Err(internal("the update script answered a batch short")));
                }
            }
            Err(error) => {
                for submission in batch {
                    let _ = submission.answer.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The update script's call for `call` (`EVAL`: see docs/cluster.md on why not `EVALSHA`).
fn script_call(call: &ScriptCall, sharded: bool, log_length: usize) -> redis::Cmd {
    let keys = StreamKeys::of(call.stream);
    let mut command = redis::cmd("EVAL");
    command
        .arg(UPDATE_SCRIPT)
        .arg(5)
        .arg(&keys.state)
        .arg(&keys.seq)
        .arg(&keys.log)
        .arg(&keys.epoch)
        .arg(&keys.last)
        .arg(call.op)
        .arg(&keys.channel)
        .arg(log_length)
        .arg(if sharded { "SPUBLISH" } else { "PUBLISH" })
        .arg(&call.name)
        .arg(&call.spec)
        .arg(&call.value[..])
        .arg(call.mode)
        .arg(if call.retained { "1" } else { "0" })
        .arg(&call.owner)
        .arg(&call.body)
        .arg(format!("{:016x}", rand::random::<u64>()))
        .arg(format!("{:016x}", rand::random::<u64>()));
    command
}

/// Reads the script's answer to `call`.
fn read_answer(call: &ScriptCall, reply: &[redis::Value]) -> Accepted {
    let text = |i: usize| match reply.get(i) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b[..]).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        Some(redis::Value::Int(n)) => n.to_string(),
        _ => String::new(),
    };
    let seq = text(1).parse().unwrap_or(0);
    let outcome = match text(0).as_str() {
        "ok" | "unchanged" => Ok(()),
        "missing" if call.op == "unview" => Err(OpError::new(
            ErrorCode::NoSuchView,
            format!("no view named '{}'", call.name),
        )),
        "missing" => Err(OpError::new(
            ErrorCode::NoSuchTopic,
            format!("no topic at path '{}'", call.name),
        )),
        "exists" => Err(OpError::new(
            ErrorCode::TopicExists,
            format!(
                "topic '{}' already exists with different type or properties",
                call.name
            ),
        )),
        "replaced" => Err(OpError::new(
            ErrorCode::NoSuchTopic,
            format!(
                "the topic at '{}' was replaced by one of another type or properties meanwhile: the value was not set",
                call.name
            ),
        )),
        other => Err(internal(&format!(
            "unexpected reply from the update script: {other}"
        ))),
    };
    Accepted { seq, outcome }
}

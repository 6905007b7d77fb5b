//! The one task that hands a node's changes to Redis: in the order they were queued, as many
//! as are waiting in one round trip (a pipeline of update-script calls, which Redis runs in
//! that order; on a Redis Cluster, one pipeline per run of calls to the same partition, since
//! a pipeline may not cross slots). Sessions queue their changes one after another and wait
//! for the answers elsewhere, so a session's stream of `set`s is pipelined without ever being
//! reordered — the order is the queue's, not that of whichever future is polled first.

use std::time::Duration;

use diffusion_core::protocol::ErrorCode;
use redis::{ErrorKind, ServerErrorKind};
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

/// The submitter's connection and settings.
struct Sender {
    commands: Commands,
    sharded: bool,
    log_length: usize,
    timeout: Duration,
    /// The update script's SHA-1, for `EVALSHA`.
    sha: String,
    /// Whether Redis is thought to hold the script (loaded before the next batch if not).
    loaded: bool,
}

async fn run(
    mut calls: mpsc::Receiver<Submission>,
    commands: Commands,
    sharded: bool,
    log_length: usize,
    timeout: Duration,
    stop: CancellationToken,
) {
    let mut sender = Sender {
        commands,
        sharded,
        log_length,
        timeout,
        sha: redis::Script::new(UPDATE_SCRIPT).get_hash().to_owned(),
        loaded: false,
    };
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
                        sender.send(batch).await;
                        batch = Vec::new();
                    }
                    batch.push(submission);
                }
                Err(_) => break,
            }
        }
        sender.send(batch).await;
    }
}

impl Sender {
    /// Sends `batch` as one pipeline of `EVALSHA`s and hands each call its answer. A call
    /// that finds the script missing (Redis restarted) did not run: it is refused, never
    /// sent again — a resent call could overtake a later one — and the script is loaded
    /// before the next batch.
    async fn send(&mut self, batch: Vec<Submission>) {
        if !self.loaded {
            let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(UPDATE_SCRIPT)
                .query_async(&mut self.commands)
                .await;
            self.loaded = loaded.is_ok();
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for submission in &batch {
            pipe.add_command(self.script_call(&submission.call));
        }
        let replies: Result<Vec<redis::RedisResult<Vec<redis::Value>>>, OpError> =
            match tokio::time::timeout(self.timeout, pipe.query_async(&mut self.commands)).await {
                Ok(Ok(replies)) => Ok(replies),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cluster: Redis refused or failed a change");
                    Err(unavailable(&error.to_string()))
                }
                Err(_) => Err(unavailable("it did not answer in time")),
            };
        let replies = match replies {
            Ok(replies) if replies.len() == batch.len() => replies,
            Ok(_) => {
                let error = internal("the update script answered a batch short");
                for submission in batch {
                    let _ = submission.answer.send(Err(error.clone()));
                }
                return;
            }
            Err(error) => {
                for submission in batch {
                    let _ = submission.answer.send(Err(error.clone()));
                }
                return;
            }
        };
        for (submission, reply) in batch.into_iter().zip(replies) {
            let answer = match reply {
                Ok(reply) => Ok(read_answer(&submission.call, &reply)),
                Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    self.loaded = false;
                    Err(OpError::new(
                        ErrorCode::Unavailable,
                        "the cluster's Redis had lost its update script (it restarted): the change was not made; retry",
                    ))
                }
                Err(error) => {
                    tracing::warn!(%error, "cluster: Redis refused or failed a change");
                    Err(unavailable(&error.to_string()))
                }
            };
            let _ = submission.answer.send(answer);
        }
    }

    /// The update script's call for `call`.
    fn script_call(&self, call: &ScriptCall) -> redis::Cmd {
        let keys = StreamKeys::of(call.stream);
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(&self.sha)
            .arg(5)
            .arg(&keys.state)
            .arg(&keys.seq)
            .arg(&keys.log)
            .arg(&keys.epoch)
            .arg(&keys.last)
            .arg(call.op)
            .arg(&keys.channel)
            .arg(self.log_length)
            .arg(if self.sharded { "SPUBLISH" } else { "PUBLISH" })
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

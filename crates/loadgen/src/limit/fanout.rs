//! The fan-out thread: it owns the routing table (who is subscribed to what) and writes every
//! published message to its subscribers' sockets itself, one non-blocking vectored write per
//! subscriber, with no task woken unless a socket could not take it all. Messages that arrive
//! while a fan-out runs are taken together: each subscriber then gets them packed in one write.
//! With more than one thread, each writes a share of the subscribers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::frame::Frame;
use super::route::Interest;
use super::subscriber::Subscriber;
use super::{Counters, outbox::Limits};

/// Messages taken into one fan-out at most.
const MAX_BATCH: usize = 256;

/// Fewer subscribers than this are written by one thread (a thread hand-off costs more).
const PARALLEL_FROM: usize = 512;

/// What the fan-out thread is told, in order.
#[derive(Debug)]
pub enum Command {
    /// A subscriber finished its handshake.
    Add(Arc<Subscriber>),
    /// A subscriber's connection ended.
    Remove(Arc<Subscriber>),
    /// A publisher's message.
    Publish(Published),
}

/// A published message, framed once.
#[derive(Debug)]
pub struct Published {
    /// Its topic, if it had one.
    pub topic: Option<Bytes>,
    /// The frame subscribers get.
    pub frame: Frame,
}

/// Who is subscribed to what, by slot in `subscribers`.
#[derive(Debug, Default)]
struct Routes {
    subscribers: Vec<Option<Arc<Subscriber>>>,
    free: Vec<u32>,
    /// Subscribers without a topics list.
    all: Vec<u32>,
    topics: HashMap<Bytes, Vec<u32>>,
}

impl Routes {
    fn add(&mut self, subscriber: Arc<Subscriber>) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.subscribers.push(None);
                // More than 4 billion subscribers do not fit in a process anyway.
                u32::try_from(self.subscribers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        subscriber.slot.store(slot, Ordering::Relaxed);
        match &subscriber.interest {
            Interest::All => self.all.push(slot),
            Interest::Topics(topics) => {
                for topic in topics {
                    self.topics.entry(topic.clone()).or_default().push(slot);
                }
            }
        }
        if let Some(entry) = self.subscribers.get_mut(slot as usize) {
            *entry = Some(subscriber);
        }
    }

    fn remove(&mut self, subscriber: &Subscriber) {
        let slot = subscriber.slot.load(Ordering::Relaxed);
        let forget = |list: &mut Vec<u32>| {
            if let Some(at) = list.iter().position(|&s| s == slot) {
                list.swap_remove(at);
            }
        };
        match &subscriber.interest {
            Interest::All => forget(&mut self.all),
            Interest::Topics(topics) => {
                for topic in topics {
                    if let Some(list) = self.topics.get_mut(topic) {
                        forget(list);
                        if list.is_empty() {
                            self.topics.remove(topic);
                        }
                    }
                }
            }
        }
        if let Some(entry) = self.subscribers.get_mut(slot as usize) {
            *entry = None;
            self.free.push(slot);
        }
    }

    /// The slots a message goes to (catch-all subscribers, then its topic's).
    fn targets<'a>(&'a self, topic: Option<&Bytes>) -> impl Iterator<Item = u32> + 'a {
        let topical = topic.and_then(|t| self.topics.get(t));
        self.all
            .iter()
            .chain(topical.into_iter().flatten())
            .copied()
    }
}

/// The fan-out thread's state.
#[derive(Debug)]
pub struct FanOut {
    routes: Routes,
    limits: Limits,
    counters: Arc<Counters>,
    threads: usize,
    /// Per slot: indexes into the batch of the messages it gets (multi-message batches).
    wanted: Vec<Vec<u16>>,
    /// Slots with something in `wanted`, in first-touch order.
    touched: Vec<u32>,
}

impl FanOut {
    /// A fan-out with nobody subscribed; `threads` write shares of large fan-outs.
    pub fn new(limits: Limits, counters: Arc<Counters>, threads: usize) -> Self {
        Self {
            routes: Routes::default(),
            limits,
            counters,
            threads: threads.max(1),
            wanted: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch: Vec<Published> = Vec::new();
        while let Some(first) = commands.blocking_recv() {
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Publish(published) => {
                        batch.push(published);
                        if batch.len() < MAX_BATCH {
                            next = commands.try_recv().ok();
                        }
                    }
                    other => {
                        self.fan_out(&mut batch);
                        self.apply(other);
                        next = commands.try_recv().ok();
                    }
                }
            }
            self.fan_out(&mut batch);
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Add(subscriber) => self.routes.add(subscriber),
            Command::Remove(subscriber) => self.routes.remove(&subscriber),
            Command::Publish(_) => {}
        }
    }

    /// Writes `batch` to its subscribers and empties it.
    fn fan_out(&mut self, batch: &mut Vec<Published>) {
        match batch.as_slice() {
            [] => return,
            [published] => {
                let targets: Vec<u32> = self.routes.targets(published.topic.as_ref()).collect();
                self.write_shares(&targets, &|_, frames: &mut Vec<&Frame>| {
                    frames.push(&published.frame);
                });
            }
            _ => self.fan_out_many(batch),
        }
        batch.clear();
    }

    /// Several messages: each subscriber gets the ones meant for it, in order, in one write.
    fn fan_out_many(&mut self, batch: &[Published]) {
        let slots = self.routes.subscribers.len();
        if self.wanted.len() < slots {
            self.wanted.resize_with(slots, Vec::new);
        }
        for (index, published) in batch.iter().enumerate() {
            for slot in self.routes.targets(published.topic.as_ref()) {
                let wanted = &mut self.wanted[slot as usize];
                if wanted.is_empty() {
                    self.touched.push(slot);
                }
                // The batch is at most MAX_BATCH long, which fits in u16.
                wanted.push(index as u16);
            }
        }
        let wanted = &self.wanted;
        self.write_shares(&self.touched, &|slot, frames: &mut Vec<&Frame>| {
            frames.extend(
                wanted[slot as usize]
                    .iter()
                    .map(|&i| &batch[usize::from(i)].frame),
            );
        });
        for &slot in &self.touched {
            let wanted = &mut self.wanted[slot as usize];
            wanted.clear();
            if wanted.capacity() > MAX_BATCH / 4 {
                wanted.shrink_to(MAX_BATCH / 4);
            }
        }
        self.touched.clear();
    }

    /// Delivers to every slot in `targets` what `frames_for` lists for it, splitting large
    /// fan-outs into one share per thread (this one writes the first).
    fn write_shares<'b, F>(&self, targets: &[u32], frames_for: &F)
    where
        F: Fn(u32, &mut Vec<&'b Frame>) + Sync,
    {
        let threads = if targets.len() >= PARALLEL_FROM {
            self.threads
        } else {
            1
        };
        let share = targets.len().div_ceil(threads).max(1);
        let mut shares = targets.chunks(share);
        let Some(mine) = shares.next() else {
            return;
        };
        std::thread::scope(|scope| {
            for other in shares {
                scope.spawn(move || self.write_share(other, frames_for));
            }
            self.write_share(mine, frames_for);
        });
    }

    fn write_share<'b, F>(&self, slots: &[u32], frames_for: &F)
    where
        F: Fn(u32, &mut Vec<&'b Frame>) + Sync,
    {
        let mut frames = Vec::new();
        let mut segments = Vec::new();
        for &slot in slots {
            let Some(Some(subscriber)) = self.routes.subscribers.get(slot as usize) else {
                continue;
            };
            frames.clear();
            frames_for(slot, &mut frames);
            subscriber.deliver(&frames, &self.limits, &mut segments, &self.counters);
        }
    }
}

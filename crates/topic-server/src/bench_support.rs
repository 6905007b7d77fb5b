//! In-process access to the topic engine for benchmarks: sessions with real outbound queues
//! but no sockets, so fan-out can be measured without the network.
//!
//! Not part of the server's API: hidden from the docs and free to change with the benchmarks.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use diffusion_core::TopicType;
use serde_json::Value;

use crate::engine::{Caller, Engine};
use crate::metrics::Metrics;
use crate::outbound::SessionOutbound;
use crate::security::{Identity, RoleSource};

/// A failed engine operation, as the `error` reply would state it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(String);

/// What draining every queue found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Messages taken.
    pub messages: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// An engine with socket-less sessions.
pub struct BenchEngine {
    engine: std::sync::Arc<Engine>,
    sessions: Vec<Arc<SessionOutbound>>,
    queue_limit_bytes: usize,
    numbered: bool,
    /// Who every session is (what it may do comes from the engine's grants).
    identity: Arc<Identity>,
}

impl BenchEngine {
    /// An empty engine whose sessions get queues of `queue_limit_bytes` and speak protocol
    /// version 2 (every message numbered and kept until acknowledged).
    pub fn new(queue_limit_bytes: usize) -> Self {
        Self {
            engine: Engine::new(Metrics::new(), crate::engine::EngineLimits::default()),
            sessions: Vec::new(),
            queue_limit_bytes,
            numbered: true,
            identity: Arc::new(Identity::open(None)),
        }
    }

    /// The same with a security store: every session holds `roles` of the store in
    /// `security_toml` (the cost of permission checks is measured against [`Self::new`]).
    pub fn new_secured(
        queue_limit_bytes: usize,
        security_toml: &str,
        roles: &[&str],
    ) -> Result<Self, BenchError> {
        let store = diffusion_core::security::SecurityStore::parse("bench", security_toml)
            .map_err(|e| BenchError(e.to_string()))?;
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let grant = Arc::new(store.grant(&roles));
        Ok(Self {
            engine: Engine::with_grants(
                Metrics::new(),
                crate::engine::EngineLimits::default(),
                Box::new(move |_| Arc::clone(&grant)),
            ),
            identity: Arc::new(Identity {
                principal: Some("bench".to_owned()),
                roles: RoleSource::Token(roles),
                expires_at: None,
            }),
            ..Self::new(queue_limit_bytes)
        })
    }

    /// The same with version-1 sessions (no numbering, no recovery buffer): the baseline the
    /// cost of recovery is measured against.
    pub fn new_version_1(queue_limit_bytes: usize) -> Self {
        Self {
            numbered: false,
            ..Self::new(queue_limit_bytes)
        }
    }

    /// Registers a new session (as after its handshake); returns its id.
    pub fn add_session(&mut self) -> u64 {
        let outbound = Arc::new(SessionOutbound::new(self.queue_limit_bytes));
        if self.numbered {
            outbound.start_numbering(Bytes::from_static(b"{}"), self.queue_limit_bytes);
            outbound.drain_now();
        }
        self.sessions.push(Arc::clone(&outbound));
        let id = self.sessions.len() as u64;
        // The bench's sessions share one principal, which the store sets no session limit for.
        let _ = self
            .engine
            .register_session(id, outbound, Arc::clone(&self.identity));
        id
    }

    /// Number of sessions registered.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The protocol's `add`.
    pub fn add(
        &self,
        path: &str,
        topic_type: TopicType,
        properties: &BTreeMap<String, String>,
        value: Option<&Value>,
    ) -> Result<(), BenchError> {
        self.engine
            .add(Caller::Server, path, topic_type, properties, value.cloned())
            .map_err(|e| BenchError(e.to_string()))
    }

    /// The protocol's `subscribe`, for session `session`.
    pub fn subscribe(&self, session: u64, selector: &str) -> Result<(), BenchError> {
        self.engine
            .subscribe(session, selector)
            .map_err(|e| BenchError(e.to_string()))
    }

    /// The protocol's `createview`.
    pub fn create_view(&self, name: &str, spec: &str) -> Result<(), BenchError> {
        self.engine
            .create_view(Caller::Server, name, spec)
            .map_err(|e| BenchError(e.to_string()))
    }

    /// The protocol's `set`: one update fanned out to every subscriber's queue.
    /// The value is cloned first, standing in for the request parse that owns
    /// it on the server.
    pub fn set(&self, path: &str, value: &Value) -> Result<(), BenchError> {
        self.engine
            .set(Caller::Server, path, value.clone())
            .map_err(|e| BenchError(e.to_string()))
    }

    /// Empties every session's queue, as the writers would.
    pub fn drain_all(&self) -> Drained {
        let mut drained = Drained::default();
        for outbound in &self.sessions {
            for message in outbound.drain_now() {
                drained.messages += 1;
                drained.bytes += message.len();
            }
        }
        drained
    }

    /// Does for every session what its writer does before the socket: takes everything queued
    /// and packs it into frames. Returns the frame bytes.
    pub fn frame_all(&self, max_frame_bytes: usize) -> usize {
        let mut bytes = 0;
        for outbound in &self.sessions {
            for frame in diffusion_core::protocol::pack_sequenced_frames(
                outbound.take_now(),
                max_frame_bytes,
            ) {
                bytes += frame.len();
            }
        }
        bytes
    }

    /// Empties one session's queue and returns its messages as text.
    pub fn drain_session(&self, session: u64) -> Vec<String> {
        let index = (session as usize).wrapping_sub(1);
        self.sessions
            .get(index)
            .map(|outbound| {
                outbound
                    .drain_now()
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fan_out_reaches_every_session_once() {
        let mut bench = BenchEngine::new(1 << 20);
        let props = BTreeMap::new();
        let doc = |n: u64| json!({"n": n, "pad": "p".repeat(300)});
        bench
            .add("t", TopicType::Json, &props, Some(&doc(0)))
            .unwrap();
        for _ in 0..3 {
            let s = bench.add_session();
            bench.subscribe(s, "t").unwrap();
        }
        assert_eq!(bench.session_count(), 3);
        assert_eq!(bench.drain_all().messages, 6, "notice and value each");
        bench.set("t", &doc(1)).unwrap();
        let first = bench.drain_session(1);
        assert_eq!(first.len(), 1);
        assert!(first[0].starts_with(r#"{"i":1,"d":"#), "{first:?}");
        assert_eq!(bench.drain_session(2), first, "the same shared delta");
        assert_eq!(bench.drain_all().messages, 1);
        assert!(bench.set("nope", &doc(2)).is_err());
    }
}

//! The application-facing handle: requests with correlation ids and timeouts, subscription
//! events, and connection lifetime.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diffusion_core::TopicType;
use diffusion_core::protocol::{
    ClientMessage, Credentials, FetchedTopic, ServerMessage, ViewInfo, encode_set_raw,
};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::connection::{self, Shared, Supervisor, message_kind, wait_closed};
use crate::error::{ClientError, Refusal};
use crate::events::TopicEvent;

/// Who the session is and whom to trust: identity and trust travel together because both are
/// about the deployment (which server, which principal), while [`ClientConfig`] holds mechanics.
///
/// The default is an anonymous session over `ws://`, or over `wss://` trusting the public web
/// roots. `Debug` never prints a password or a token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// How the session authenticates: anonymously, with a principal and password, or with a
    /// signed token (JWT). Sent in every `connect`, including those that resume the session.
    pub credentials: Credentials,
    /// A PEM file of CA certificates to trust for `wss://` besides the public web roots (for a
    /// server whose certificate a private CA signed). Read once, when connecting.
    pub ca_file: Option<PathBuf>,
}

impl ConnectOptions {
    /// Authenticates as `principal` with `password`.
    pub fn password(principal: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            credentials: Credentials::Password {
                principal: principal.into(),
                password: password.into(),
            },
            ca_file: None,
        }
    }

    /// Authenticates with a signed token (JWT).
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            credentials: Credentials::Token(token.into()),
            ca_file: None,
        }
    }

    /// The same identity, also trusting the CA certificates in `ca_file` for `wss://`.
    pub fn with_ca_file(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(ca_file.into());
        self
    }
}

impl std::fmt::Debug for ConnectOptions {
    // Options end up in logs and panic messages: show who, never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let identity = match &self.credentials {
            Credentials::Anonymous => "anonymous".to_owned(),
            Credentials::Password { principal, .. } => {
                format!("principal {principal:?} (password)")
            }
            Credentials::Token(_) => "token".to_owned(),
        };
        f.debug_struct("ConnectOptions")
            .field("credentials", &format_args!("{identity}"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Tuning knobs with sensible defaults; separate from [`ConnectOptions`] so identity and
/// mechanics evolve independently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long each request waits for its reply (default 10 s).
    pub request_timeout: Duration,
    /// How long dialling and the handshake may each take (default 10 s).
    pub connect_timeout: Duration,
    /// Events buffered between the connection and the application (default 1024). When full,
    /// the client stops reading the socket until the application catches up.
    pub event_capacity: usize,
    /// Largest message or frame accepted from the server, in bytes (default 16 MiB).
    pub max_message_size: usize,
    /// Whether to reconnect (and resume the session) when the connection is lost (default
    /// true). Off, a lost connection closes the client.
    pub reconnect: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 1024,
            max_message_size: 16 * 1024 * 1024,
            reconnect: true,
        }
    }
}

/// Outgoing frames queued for the writer task; requests are small, so this only smooths bursts.
const OUTGOING_CAPACITY: usize = 256;

/// A connection to the topic server. Cheap to clone; clones share the connection, the request
/// ids and the event stream. The connection closes when [`TopicClient::close`] is called or the
/// last clone is dropped.
///
/// Events are delivered through a bounded channel that the application must drain (with
/// [`TopicClient::next_event`]) while it has subscriptions: when it is full the client stops
/// reading the socket, which also holds back request replies. Read events in their own task,
/// or concurrently with awaiting `subscribe`, when a selector may match many topics.
#[derive(Debug, Clone)]
pub struct TopicClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Message>,
    events: Mutex<mpsc::Receiver<TopicEvent>>,
    session: String,
    config: ClientConfig,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody can read events or replies any more: the supervisor sends a close frame
        // (ending the session), marks the client closed (for any `closed()` future still held)
        // and stops.
        self.shared.stop();
    }
}

/// Removes a request from the pending map however its wait ends (reply, timeout, cancellation).
struct PendingGuard<'a> {
    shared: &'a Shared,
    cid: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.cid);
    }
}

impl TopicClient {
    /// Connects to `url` (`ws://host:port/`, `wss://host:port/`, or either with `/ws`) and
    /// performs the handshake, with the default [`ClientConfig`]. A refused authentication is
    /// [`ClientError::Refused`].
    ///
    /// `url` may name several servers, separated by commas (the nodes of one deployment): the
    /// first that answers is used, and when its connection is lost the client tries it once
    /// more (to resume its session there), then moves on to the next, subscribing again
    /// where its session cannot be resumed.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, ClientError> {
        Self::connect_with(url, options, ClientConfig::default()).await
    }

    /// Connects with explicit tuning.
    pub async fn connect_with(
        url: &str,
        options: ConnectOptions,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let urls = connection::server_urls(url)?;
        let tls = connection::tls_for(&urls, &options)?;
        let mut current = 0;
        let established = loop {
            let attempt = connection::establish(
                &urls[current],
                connection::hello(&options, None),
                tls.clone(),
                config.connect_timeout,
                config.max_message_size,
            )
            .await;
            match attempt {
                Ok(established) => break established,
                // Another node would refuse the same identity.
                Err(error @ ClientError::Refused(_)) => return Err(error),
                Err(error) if current + 1 == urls.len() => return Err(error),
                Err(error) => {
                    tracing::debug!(url = %urls[current], %error, "server not available; trying the next");
                    current += 1;
                }
            }
        };
        tracing::debug!(url = %urls[current], session = %established.session, version = established.version, "connected to the topic server");
        let shared = Arc::new(Shared::new());
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(1));
        let session = established.session.clone();
        let supervisor = Supervisor {
            urls,
            current,
            options,
            tls,
            config: config.clone(),
            shared: Arc::clone(&shared),
            events: event_tx,
            outgoing: out_rx,
        };
        tokio::spawn(supervisor.run(established));
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                outgoing: out_tx,
                events: Mutex::new(event_rx),
                session,
                config,
            }),
        })
    }

    /// The session id the server assigned at the first connection (useful in logs when asking
    /// the server's operator; a session that could not be resumed gets a new one).
    pub fn session(&self) -> &str {
        &self.inner.session
    }

    /// Creates a topic without a value. Succeeds if an identical topic already exists.
    pub async fn add_topic(
        &self,
        path: impl Into<String>,
        topic_type: TopicType,
        properties: BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        self.add(path.into(), topic_type, properties, None).await
    }

    /// Creates a topic with an initial value (in the type's JSON wire form).
    pub async fn add_topic_with_value(
        &self,
        path: impl Into<String>,
        topic_type: TopicType,
        properties: BTreeMap<String, String>,
        value: Value,
    ) -> Result<(), ClientError> {
        self.add(path.into(), topic_type, properties, Some(value))
            .await
    }

    async fn add(
        &self,
        path: String,
        topic_type: TopicType,
        properties: BTreeMap<String, String>,
        value: Option<Value>,
    ) -> Result<(), ClientError> {
        self.expect_ok(|cid| ClientMessage::Add {
            cid,
            path,
            topic_type,
            properties,
            value,
        })
        .await
    }

    /// Sets a topic's value (in the type's JSON wire form; `null` clears a scalar topic).
    pub async fn set(&self, path: impl Into<String>, value: Value) -> Result<(), ClientError> {
        let path = path.into();
        self.expect_ok(|cid| ClientMessage::Set { cid, path, value })
            .await
    }

    /// Sets a topic's value from JSON text it already holds, sending those bytes as they are
    /// (no parse into a tree, no re-serialisation): what a relay forwarding payloads uses.
    pub async fn set_raw(
        &self,
        path: &str,
        value: &serde_json::value::RawValue,
    ) -> Result<(), ClientError> {
        match self
            .request_text(|cid| Ok(encode_set_raw(cid, path, value)))
            .await?
        {
            ServerMessage::Ok { .. } => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    /// Subscribes to every topic the selector selects, now and in future; events follow.
    pub async fn subscribe(&self, selector: impl Into<String>) -> Result<(), ClientError> {
        let selector = selector.into();
        let remembered = selector.clone();
        self.expect_ok(|cid| ClientMessage::Subscribe { cid, selector })
            .await?;
        // Kept so that a session the server cannot resume is subscribed again.
        self.inner.shared.remember_selector(&remembered);
        Ok(())
    }

    /// Withdraws a subscription made with exactly this selector text.
    pub async fn unsubscribe(&self, selector: impl Into<String>) -> Result<(), ClientError> {
        let selector = selector.into();
        self.inner.shared.forget_selector(&selector);
        self.expect_ok(|cid| ClientMessage::Unsubscribe { cid, selector })
            .await
    }

    /// Removes every topic the selector selects.
    pub async fn remove(&self, selector: impl Into<String>) -> Result<(), ClientError> {
        let selector = selector.into();
        self.expect_ok(|cid| ClientMessage::Remove { cid, selector })
            .await
    }

    /// Reads the current values of the selected topics (in path order) without subscribing,
    /// fetching page after page until the server says there are no more.
    pub async fn fetch(
        &self,
        selector: impl Into<String>,
    ) -> Result<Vec<FetchedTopic>, ClientError> {
        let selector = selector.into();
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = self.fetch_page(&selector, after.take(), None).await?;
            let last = page.last().map(|t| t.path.clone());
            all.extend(page);
            match (more, last) {
                (true, Some(last)) => after = Some(last),
                _ => return Ok(all),
            }
        }
    }

    /// Reads one page of the selected topics: those after `after` (in path order), at most
    /// `limit` of them (the server may send fewer). Returns the page and whether more follow.
    pub async fn fetch_page(
        &self,
        selector: &str,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<(Vec<FetchedTopic>, bool), ClientError> {
        let selector = selector.to_owned();
        match self
            .request(|cid| ClientMessage::Fetch {
                cid,
                selector,
                after,
                limit,
            })
            .await?
        {
            ServerMessage::Fetched { topics, more, .. } => Ok((topics, more)),
            other => Err(unexpected("fetched", &other)),
        }
    }

    /// Creates the named topic view, or replaces its specification (keeping its precedence).
    /// An invalid specification fails with `INVALID_VIEW` and a `line:column` message.
    pub async fn create_view(
        &self,
        name: impl Into<String>,
        spec: impl Into<String>,
    ) -> Result<(), ClientError> {
        let (name, spec) = (name.into(), spec.into());
        self.expect_ok(|cid| ClientMessage::CreateView { cid, name, spec })
            .await
    }

    /// Removes the named topic view and its reference topics.
    pub async fn remove_view(&self, name: impl Into<String>) -> Result<(), ClientError> {
        let name = name.into();
        self.expect_ok(|cid| ClientMessage::RemoveView { cid, name })
            .await
    }

    /// The server's topic views, in precedence order.
    pub async fn list_views(&self) -> Result<Vec<ViewInfo>, ClientError> {
        match self.request(|cid| ClientMessage::ListViews { cid }).await? {
            ServerMessage::Views { views, .. } => Ok(views),
            other => Err(unexpected("views", &other)),
        }
    }

    /// Checks the server is alive and answering; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        match self.request(|cid| ClientMessage::Ping { cid }).await? {
            ServerMessage::Pong { .. } => Ok(started.elapsed()),
            other => Err(unexpected("pong", &other)),
        }
    }

    /// The next subscription event, waiting for one; `None` once the connection is closed and
    /// every event received before that has been returned. Clones share one stream: each event
    /// goes to exactly one caller.
    pub async fn next_event(&self) -> Option<TopicEvent> {
        self.inner.events.lock().await.recv().await
    }

    /// Closes the connection politely (a WebSocket close frame), waiting at most the request
    /// timeout for the server to acknowledge. Requests still waiting fail with `Closed`.
    pub async fn close(&self) {
        if self.is_closed() {
            return;
        }
        let inner = &self.inner;
        // Refuse further events (those already buffered can still be read), so a reader stuck
        // waiting for room in a full event buffer moves on and sees the server's close reply.
        if let Ok(mut events) = inner.events.try_lock() {
            events.close();
        }
        inner.shared.begin_close();
        let polite = async {
            if inner.outgoing.send(Message::Close(None)).await.is_ok() {
                wait_closed(inner.shared.closed_watch()).await;
            }
        };
        if tokio::time::timeout(inner.config.request_timeout, polite)
            .await
            .is_err()
        {
            tracing::debug!("server did not acknowledge close; dropping the connection");
        }
        inner.shared.shut_down();
    }

    /// True once the connection is gone (no request can succeed any more).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// Why the server ended this client for good, once it has: its authentication was refused
    /// (close code 4003) or its token expired (4004). `None` while it runs, and after any other
    /// end. An application whose event stream ended reads this to tell "log in again" from
    /// "connection lost".
    pub fn refusal(&self) -> Option<Refusal> {
        self.inner.shared.refusal()
    }

    /// A future that completes when the connection is gone, whoever closed it. It does not
    /// borrow the client, so it can be selected on next to other work (e.g. to reconnect).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        wait_closed(self.inner.shared.closed_watch())
    }

    async fn expect_ok(&self, build: impl FnOnce(u64) -> ClientMessage) -> Result<(), ClientError> {
        match self.request(build).await? {
            ServerMessage::Ok { .. } => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    /// Sends one request and waits for the reply carrying its cid; `error` replies become
    /// [`ClientError::Server`].
    async fn request(
        &self,
        build: impl FnOnce(u64) -> ClientMessage,
    ) -> Result<ServerMessage, ClientError> {
        self.request_text(|cid| {
            serde_json::to_string(&build(cid)).map_err(|e| ClientError::Protocol(e.to_string()))
        })
        .await
    }

    /// Sends one request, already encoded by `encode` for its cid, and waits for its reply.
    async fn request_text(
        &self,
        encode: impl FnOnce(u64) -> Result<String, ClientError>,
    ) -> Result<ServerMessage, ClientError> {
        let inner = &self.inner;
        let cid = inner.shared.next_cid();
        let text = encode(cid)?;
        let reply = inner.shared.register(cid)?;
        let _guard = PendingGuard {
            shared: &inner.shared,
            cid,
        };
        let timeout = inner.config.request_timeout;
        let exchange = async {
            inner
                .outgoing
                .send(Message::text(text))
                .await
                .map_err(|_| inner.shared.closed_error())?;
            // A dropped waiter: the client closed, or the connection was lost in flight.
            reply.await.map_err(|_| {
                if inner.shared.is_closed() {
                    inner.shared.closed_error()
                } else {
                    ClientError::Disconnected
                }
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(ServerMessage::Error { code, message, .. })) => {
                Err(ClientError::Server { code, message })
            }
            Ok(Ok(reply)) => Ok(reply),
        }
    }
}

fn unexpected(expected: &str, got: &ServerMessage) -> ClientError {
    ClientError::Protocol(format!(
        "expected '{expected}' reply, got '{}'",
        message_kind(got)
    ))
}

//! Permissions over real sockets (docs/security.md §2, §6, §8): a permission matrix generated
//! from a table of roles and principals, checked against a small model of the documented rules
//! written here (not the server's evaluator); views that try to copy what their creator may not
//! read, or write where it may not modify; and a SIGHUP reload of the real binary that tightens
//! a role under a subscribed session, then a broken file that must leave the old store in force.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, Version};
use common::{Client, STEP, TestServer};
use diffusion_core::protocol::{ErrorCode, FetchedTopic, ServerMessage};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The model: roles as data, evaluated with the rules of docs/security.md §2.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Perm {
    Select,
    Read,
    Update,
    Modify,
}

use Perm::{Modify as M, Read as R, Select as S, Update as U};

impl Perm {
    fn name(self) -> &'static str {
        match self {
            S => "SELECT_TOPIC",
            R => "READ_TOPIC",
            U => "UPDATE_TOPIC",
            M => "MODIFY_TOPIC",
        }
    }
}

const MODIFY_VIEWS: &str = "MODIFY_TOPIC_VIEWS";
const READ_VIEWS: &str = "READ_TOPIC_VIEWS";
const ALL: &[Perm] = &[S, R, U, M];

/// One role of the security file.
struct Role {
    name: &'static str,
    global: &'static [&'static str],
    default_path: &'static [Perm],
    paths: &'static [(&'static str, &'static [Perm])],
    isolated: &'static [&'static str],
    includes: &'static [&'static str],
}

impl Role {
    /// This role's own permissions at `path`: the most specific assignment wins (not merged);
    /// an isolated path without an assignment of its own gives nothing and stops the search;
    /// with no assignment on the way up, the default applies.
    fn at(&self, path: &str) -> BTreeSet<Perm> {
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        for n in (1..=segments.len()).rev() {
            let prefix = segments[..n].join("/");
            if let Some((_, assigned)) = self.paths.iter().find(|(p, _)| *p == prefix) {
                return assigned.iter().copied().collect();
            }
            if self.isolated.contains(&prefix.as_str()) {
                return BTreeSet::new();
            }
        }
        self.default_path.iter().copied().collect()
    }
}

/// One principal (`None`: anonymous sessions).
struct Principal {
    name: Option<&'static str>,
    roles: &'static [&'static str],
}

impl Principal {
    fn label(&self) -> &'static str {
        self.name.unwrap_or("anonymous")
    }
}

/// The roles of a principal, included ones too (transitively), each once.
fn flatten<'a>(roles: &'a [Role], names: &[&str]) -> Vec<&'a Role> {
    let mut seen: Vec<&'a Role> = Vec::new();
    let mut todo: Vec<&str> = names.to_vec();
    while let Some(name) = todo.pop() {
        if seen.iter().any(|r| r.name == name) {
            continue;
        }
        let role = roles
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("the table has no role {name}"));
        seen.push(role);
        todo.extend(role.includes.iter().copied());
    }
    seen
}

/// What the model says a set of roles may do.
struct Model<'a> {
    roles: Vec<&'a Role>,
}

impl<'a> Model<'a> {
    fn new(table: &'a [Role], names: &[&str]) -> Self {
        Self {
            roles: flatten(table, names),
        }
    }

    fn may(&self, perm: Perm, path: &str) -> bool {
        self.roles.iter().any(|r| r.at(path).contains(&perm))
    }

    fn may_global(&self, perm: &str) -> bool {
        self.roles.iter().any(|r| r.global.contains(&perm))
    }
}

// ---------------------------------------------------------------------------------------------
// Writing a security file.
// ---------------------------------------------------------------------------------------------

/// An argon2id PHC string for `password`, with small parameters so debug builds check it fast
/// (the server accepts any parameters).
fn hash(password: &str) -> String {
    let params = Params::new(Params::MIN_M_COST.max(64), 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

fn password_of(principal: &str) -> String {
    format!("pw-{principal}-secret")
}

fn toml_list<T>(items: &[T], f: impl Fn(&T) -> &str) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{}\"", f(i))).collect();
    format!("[{}]", quoted.join(", "))
}

/// The TOML text of a store with these roles and principals.
fn store_toml(roles: &[Role], principals: &[Principal]) -> String {
    let mut text = String::new();
    if let Some(anonymous) = principals.iter().find(|p| p.name.is_none()) {
        text += &format!("anonymous = {}\n\n", toml_list(anonymous.roles, |r| r));
    }
    for p in principals {
        let Some(name) = p.name else { continue };
        text += &format!(
            "[principals.{name}]\npassword = \"{}\"\nroles = {}\n\n",
            hash(&password_of(name)),
            toml_list(p.roles, |r| r)
        );
    }
    for role in roles {
        let paths: Vec<String> = role
            .paths
            .iter()
            .map(|(path, perms)| format!("\"{path}\" = {}", toml_list(perms, |p| p.name())))
            .collect();
        text += &format!(
            "[roles.{}]\nglobal = {}\ndefault_path = {}\npaths = {{ {} }}\nisolated = {}\nincludes = {}\n\n",
            role.name,
            toml_list(role.global, |g| g),
            toml_list(role.default_path, |p| p.name()),
            paths.join(", "),
            toml_list(role.isolated, |i| i),
            toml_list(role.includes, |i| i),
        );
    }
    text
}

/// A fresh temporary directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "topic-server-permissions-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `path` atomically (a reload never reads half a file).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An in-process server with a security file holding `toml`.
async fn secured_server(tag: &str, toml: &str) -> (TestServer, PathBuf) {
    let dir = temp_dir(tag);
    let file = dir.join("security.toml");
    write_atomically(&file, toml);
    let for_config = file.clone();
    let server = TestServer::start_with(move |c| c.security = Some(for_config)).await;
    (server, dir)
}

// ---------------------------------------------------------------------------------------------
// Protocol helpers.
// ---------------------------------------------------------------------------------------------

/// A session of `principal` (with its password), or anonymous.
async fn session(server: &TestServer, principal: Option<&str>) -> Client {
    let extra = match principal {
        Some(name) => json!({"principal": name, "credentials": password_of(name)}),
        None => json!({}),
    };
    let (client, reply) = server.client_with(extra).await;
    assert!(
        matches!(reply, ServerMessage::Connected { .. }),
        "{principal:?} could not connect: {reply:?}"
    );
    client
}

/// Whether a reply is `ok`; panics unless it is `ok` or `PERMISSION_DENIED`.
fn allowed(what: &str, reply: &ServerMessage) -> bool {
    match reply {
        ServerMessage::Ok { .. } | ServerMessage::Views { .. } => true,
        ServerMessage::Error {
            code: ErrorCode::PermissionDenied,
            ..
        } => false,
        other => panic!("{what}: expected ok or PERMISSION_DENIED, got {other:?}"),
    }
}

/// One page of `fetch` (the tests' trees are small).
async fn fetch(client: &mut Client, selector: &str) -> Vec<FetchedTopic> {
    match client
        .request(json!({"type":"fetch","selector":selector}))
        .await
    {
        ServerMessage::Fetched { topics, more, .. } => {
            assert!(!more, "the tests' trees fit one page");
            topics
        }
        other => panic!("fetch {selector}: {other:?}"),
    }
}

async fn fetch_paths(client: &mut Client, selector: &str) -> Vec<String> {
    fetch(client, selector)
        .await
        .into_iter()
        .map(|t| t.path)
        .collect()
}

async fn value_at(client: &mut Client, path: &str) -> Option<Value> {
    fetch(client, &format!(">{path}"))
        .await
        .into_iter()
        .find(|t| t.path == path)
        .map(|t| t.value.unwrap_or(Value::Null))
}

async fn add(client: &mut Client, path: &str, value: Value) -> ServerMessage {
    client
        .request(json!({"type":"add","path":path,"topicType":"JSON","value":value}))
        .await
}

/// Paths of the `subscribed` notices among `messages`.
fn subscribed_paths(messages: &[ServerMessage]) -> BTreeSet<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Subscribed { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// Topic id → path of the `subscribed` notices among `messages`.
fn subscribed_ids(messages: &[ServerMessage]) -> BTreeMap<u64, String> {
    messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Subscribed { id, path, .. } => Some((*id, path.clone())),
            _ => None,
        })
        .collect()
}

/// Topic ids of the `value`/`delta` updates among `messages`.
fn updated_ids(messages: &[ServerMessage]) -> BTreeSet<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Value { id, .. } | ServerMessage::Delta { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The permission matrix.
// ---------------------------------------------------------------------------------------------

/// The roles of the matrix. Between them: role inclusion (WRITER includes READER), an override
/// that takes away what an ancestor grants (WRITER's `pub/ro`, VIEWER's `pub/b`), isolated paths
/// (`pub/iso`, `priv`) with an assignment below one (`pub/iso/own`), defaults (CLIENT, VIEWER,
/// ADMIN), global permissions held apart (MAKER may create views but not list them).
const ROLES: &[Role] = &[
    Role {
        name: "CLIENT",
        global: &[],
        default_path: &[S],
        paths: &[("pub", &[S, R]), ("pub/b", &[R])],
        isolated: &[],
        includes: &[],
    },
    Role {
        name: "READER",
        global: &[],
        default_path: &[],
        paths: &[("pub", &[S, R]), ("other", &[S, R])],
        isolated: &["pub/iso"],
        includes: &[],
    },
    Role {
        name: "WRITER",
        global: &[MODIFY_VIEWS],
        default_path: &[],
        paths: &[
            ("pub", &[U, M]),
            ("pub/ro", &[]),
            ("pub/iso/own", ALL),
            ("mirror", &[M]),
            ("mirror/writer/pub/ro", &[R]),
        ],
        isolated: &["pub/iso"],
        includes: &["READER"],
    },
    Role {
        name: "VIEWER",
        global: &[READ_VIEWS],
        default_path: &[S, R],
        paths: &[("pub/b", &[S])],
        isolated: &["priv"],
        includes: &[],
    },
    Role {
        name: "MAKER",
        global: &[MODIFY_VIEWS],
        default_path: &[],
        paths: &[
            ("pub", &[S]),
            ("other", &[R]),
            ("mirror/maker/pub", &[M]),
            ("mirror/maker/other", &[M]),
        ],
        isolated: &[],
        includes: &[],
    },
    Role {
        name: "ADMIN",
        global: &[MODIFY_VIEWS, READ_VIEWS],
        default_path: ALL,
        paths: &[],
        isolated: &[],
        includes: &[],
    },
];

const PRINCIPALS: &[Principal] = &[
    Principal {
        name: None,
        roles: &["CLIENT"],
    },
    Principal {
        name: Some("reader"),
        roles: &["READER"],
    },
    Principal {
        name: Some("writer"),
        roles: &["WRITER"],
    },
    Principal {
        name: Some("viewer"),
        roles: &["VIEWER"],
    },
    Principal {
        name: Some("maker"),
        roles: &["MAKER"],
    },
    Principal {
        name: Some("nobody"),
        roles: &[],
    },
    Principal {
        name: Some("admin"),
        roles: &["ADMIN"],
    },
];

/// The topics every cell works on.
const CELL_PATHS: &[&str] = &[
    "pub/a",
    "pub/b/c",
    "pub/ro/x",
    "pub/iso/x",
    "pub/iso/own/x",
    "priv/x",
    "other/y",
    "pubx",
];

/// Records the outcome of each cell; mismatches are reported all together.
#[derive(Default)]
struct Matrix {
    cells: usize,
    by_verb: BTreeMap<&'static str, (usize, usize)>,
    wrong: Vec<String>,
}

impl Matrix {
    fn check(&mut self, verb: &'static str, cell: String, expected: bool, actual: bool) {
        self.cells += 1;
        let counts = self.by_verb.entry(verb).or_default();
        if expected {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
        if expected != actual {
            self.wrong.push(format!(
                "{cell}: expected {}, got {}",
                if expected {
                    "allowed"
                } else {
                    "PERMISSION_DENIED"
                },
                if actual {
                    "allowed"
                } else {
                    "PERMISSION_DENIED"
                }
            ));
        }
    }

    fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            self.wrong.push(what);
        }
    }
}

/// Every principal × every path × subscribe, fetch, set, add, remove, create view; plus list
/// views per principal. Each cell asserts allowed or `PERMISSION_DENIED` (the session answering
/// the next request proves it stayed open) and what the operation did, as seen by an observer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_follows_the_model() {
    let (server, dir) = secured_server("matrix", &store_toml(ROLES, PRINCIPALS)).await;
    let mut observer = session(&server, Some("admin")).await;
    // Current value of every cell topic, as the model tracks it.
    let mut current: BTreeMap<String, Value> = BTreeMap::new();
    for path in CELL_PATHS {
        let value = json!({"at": path, "n": 0});
        assert!(matches!(
            add(&mut observer, path, value.clone()).await,
            ServerMessage::Ok { .. }
        ));
        current.insert((*path).to_owned(), value);
    }

    let mut matrix = Matrix::default();
    for (pi, principal) in PRINCIPALS.iter().enumerate() {
        let who = principal.label();
        let model = Model::new(ROLES, principal.roles);
        let mut client = session(&server, principal.name).await;

        for (ti, path) in CELL_PATHS.iter().enumerate() {
            let path = *path;

            // fetch: never refused; only readable topics come back.
            let got = fetch_paths(&mut client, &format!(">{path}")).await;
            let readable = model.may(R, path);
            matrix.check(
                "fetch",
                format!("{who} fetch {path}"),
                readable,
                !got.is_empty(),
            );
            matrix.expect(
                got.is_empty() || got == [path],
                format!("{who} fetch {path}: got {got:?}"),
            );

            // subscribe: SELECT at the selector's prefix (here the path itself); the topic
            // arrives only when readable, with its current value.
            let selector = format!(">{path}");
            let reply = client
                .request(json!({"type":"subscribe","selector":selector}))
                .await;
            let ok = allowed("subscribe", &reply);
            matrix.check(
                "subscribe",
                format!("{who} subscribe {selector}"),
                model.may(S, path),
                ok,
            );
            let seen = client.until_pong().await;
            let expected: BTreeSet<String> = if ok && readable {
                [path.to_owned()].into()
            } else {
                BTreeSet::new()
            };
            matrix.expect(
                subscribed_paths(&seen) == expected,
                format!("{who} subscribe {selector}: delivered {seen:?}, expected {expected:?}"),
            );
            let values: Vec<&Value> = seen
                .iter()
                .filter_map(|m| match m {
                    ServerMessage::Value { value, .. } => Some(value),
                    _ => None,
                })
                .collect();
            let expected_values: Vec<&Value> = if ok && readable {
                vec![&current[path]]
            } else {
                Vec::new()
            };
            matrix.expect(
                values == expected_values,
                format!("{who} subscribe {selector}: values {values:?}"),
            );
            if ok {
                client
                    .ok(json!({"type":"unsubscribe","selector":selector}))
                    .await;
                let _ = client.until_pong().await;
            }

            // set: UPDATE at the path; the observer sees the value change only when allowed.
            let value = json!({"at": path, "by": who, "n": pi * 100 + ti + 1});
            let reply = client
                .request(json!({"type":"set","path":path,"value":value}))
                .await;
            let ok = allowed("set", &reply);
            matrix.check("set", format!("{who} set {path}"), model.may(U, path), ok);
            if ok {
                current.insert(path.to_owned(), value);
            }
            let now = value_at(&mut observer, path).await;
            matrix.expect(
                now.as_ref() == Some(&current[path]),
                format!("{who} set {path}: the topic holds {now:?}"),
            );

            // add: MODIFY at the new topic's path.
            let added = format!("{path}/added_{who}");
            let ok = allowed("add", &add(&mut client, &added, json!({"new": true})).await);
            matrix.check(
                "add",
                format!("{who} add {added}"),
                model.may(M, &added),
                ok,
            );
            let exists = value_at(&mut observer, &added).await.is_some();
            matrix.expect(exists == ok, format!("{who} add {added}: exists {exists}"));
            if exists {
                observer
                    .ok(json!({"type":"remove","selector":format!(">{added}")}))
                    .await;
            }

            // remove: MODIFY at the selector's prefix (here the topic itself).
            let victim = format!("{path}/victim_{who}");
            assert!(matches!(
                add(&mut observer, &victim, json!(1)).await,
                ServerMessage::Ok { .. }
            ));
            let reply = client
                .request(json!({"type":"remove","selector":format!(">{victim}")}))
                .await;
            let ok = allowed("remove", &reply);
            matrix.check(
                "remove",
                format!("{who} remove {victim}"),
                model.may(M, &victim),
                ok,
            );
            let exists = value_at(&mut observer, &victim).await.is_some();
            matrix.expect(
                exists != ok,
                format!("{who} remove {victim}: still exists {exists}"),
            );
            if exists {
                observer
                    .ok(json!({"type":"remove","selector":format!(">{victim}")}))
                    .await;
            }

            // create view: MODIFY_TOPIC_VIEWS; the view copies the topic only when its creator
            // may read it, and only to where its creator may modify topics.
            let name = format!("v-{who}-{ti}");
            let mirror = format!("mirror/{who}/{path}");
            let reply = client
                .request(json!({"type":"createview","name":name,"spec":format!("map >{path} to {mirror}")}))
                .await;
            let ok = allowed("createview", &reply);
            matrix.check(
                "createview",
                format!("{who} createview {name}"),
                model.may_global(MODIFY_VIEWS),
                ok,
            );
            let copied = value_at(&mut observer, &mirror).await;
            let expected = (ok && readable && model.may(M, &mirror)).then(|| current[path].clone());
            matrix.expect(
                copied == expected,
                format!("{who} view {path} -> {mirror}: holds {copied:?}, expected {expected:?}"),
            );
            if ok {
                client.ok(json!({"type":"removeview","name":name})).await;
                matrix.expect(
                    value_at(&mut observer, &mirror).await.is_none(),
                    format!("{who}: {mirror} outlived its view"),
                );
            }
        }

        // list views: READ_TOPIC_VIEWS.
        let reply = client.request(json!({"type":"listviews"})).await;
        let ok = allowed("listviews", &reply);
        matrix.check(
            "listviews",
            format!("{who} listviews"),
            model.may_global(READ_VIEWS),
            ok,
        );
        client.ping().await;
    }

    assert!(
        matrix.wrong.is_empty(),
        "{} of {} cells wrong:\n{}",
        matrix.wrong.len(),
        matrix.cells,
        matrix.wrong.join("\n")
    );
    assert!(matrix.cells >= 150, "only {} cells", matrix.cells);
    // The table must exercise both outcomes of every verb.
    for (verb, (yes, no)) in &matrix.by_verb {
        assert!(*yes > 0 && *no > 0, "{verb}: {yes} allowed, {no} denied");
    }
    eprintln!(
        "permission matrix: {} cells {:?}",
        matrix.cells, matrix.by_verb
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Wildcard subscriptions deliver exactly the readable topics they select — those there at
/// `subscribe` and those added after it — and nothing of the others, not even their updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_deliver_only_readable_topics_also_when_added_later() {
    let (server, dir) = secured_server("wildcard", &store_toml(ROLES, PRINCIPALS)).await;
    let mut observer = session(&server, Some("admin")).await;
    let mut tree: Vec<String> = Vec::new();
    for path in CELL_PATHS {
        observer
            .ok(json!({"type":"add","path":path,"topicType":"JSON","value":{"n":0}}))
            .await;
        tree.push((*path).to_owned());
    }
    // (selector, its path prefix, what it selects)
    type Selects = fn(&str) -> bool;
    let selectors: &[(&str, &str, Selects)] = &[
        ("?pub//", "pub", |p| p == "pub" || p.starts_with("pub/")),
        ("*.*", "", |_| true),
        ("?other//", "other", |p| {
            p == "other" || p.starts_with("other/")
        }),
    ];

    let mut cells = 0;
    let mut wrong = Vec::new();
    // Per principal: its session and, per selector, whether the subscribe was allowed.
    let mut sessions = Vec::new();
    for principal in PRINCIPALS {
        let who = principal.label();
        let model = Model::new(ROLES, principal.roles);
        let mut client = session(&server, principal.name).await;
        let mut held = Vec::new();
        let mut seen_paths = BTreeSet::new();
        let mut known = BTreeMap::new();
        for (selector, prefix, selects) in selectors {
            let reply = client
                .request(json!({"type":"subscribe","selector":selector}))
                .await;
            let ok = allowed("subscribe", &reply);
            cells += 1;
            if ok != model.may(S, prefix) {
                wrong.push(format!("{who} subscribe {selector}: allowed {ok}"));
            }
            let messages = client.until_pong().await;
            known.extend(subscribed_ids(&messages));
            let seen = subscribed_paths(&messages);
            let expected: BTreeSet<String> = tree
                .iter()
                .filter(|p| ok && selects(p) && model.may(R, p) && !seen_paths.contains(*p))
                .cloned()
                .collect();
            if seen != expected {
                wrong.push(format!(
                    "{who} subscribe {selector}: delivered {seen:?}, expected {expected:?}"
                ));
            }
            seen_paths.extend(seen);
            held.push(ok);
        }
        sessions.push((principal, model, client, held, seen_paths, known));
    }

    // Topics added after the subscriptions, in every kind of place.
    let later = [
        "pub/new",
        "pub/b/new",
        "pub/ro/new",
        "pub/iso/new",
        "pub/iso/own/new",
        "priv/new",
        "other/new",
        "pubx/new",
    ];
    for path in later {
        observer
            .ok(json!({"type":"add","path":path,"topicType":"JSON","value":{"n":1}}))
            .await;
    }
    // And an update of every topic.
    for path in CELL_PATHS.iter().copied().chain(later) {
        observer
            .ok(json!({"type":"set","path":path,"value":{"n":2}}))
            .await;
    }

    for (principal, model, client, held, before, known) in &mut sessions {
        let who = principal.label();
        let seen = client.until_pong().await;
        let new = subscribed_paths(&seen);
        let expected: BTreeSet<String> = later
            .iter()
            .filter(|p| {
                model.may(R, p)
                    && selectors
                        .iter()
                        .zip(held.iter())
                        .any(|((_, _, selects), ok)| *ok && selects(p))
            })
            .map(|p| (*p).to_owned())
            .collect();
        cells += later.len();
        if new != expected {
            wrong.push(format!(
                "{who}: topics added later delivered {new:?}, expected {expected:?}"
            ));
        }
        // Every update received is of a topic the session was subscribed to, so readable.
        known.extend(subscribed_ids(&seen));
        for id in updated_ids(&seen) {
            match known.get(&id) {
                Some(path) if model.may(R, path) => {}
                other => wrong.push(format!("{who}: update of topic {id} ({other:?})")),
            }
        }
        let update_count = seen
            .iter()
            .filter(|m| matches!(m, ServerMessage::Value { .. } | ServerMessage::Delta { .. }))
            .count();
        // Each subscribed topic: one update (its value on subscribe, or the set after it);
        // topics subscribed before the adds get exactly the one set.
        let expected_updates = before.len() + 2 * new.len();
        if update_count != expected_updates {
            wrong.push(format!(
                "{who}: {update_count} updates, expected {expected_updates} ({} subscribed before, {} later): {seen:?}",
                before.len(),
                new.len()
            ));
        }
        // Nothing unreadable arrived.
        for path in before.iter().chain(new.iter()) {
            if !model.may(R, path) {
                wrong.push(format!("{who}: unreadable {path} delivered"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // remove with a wildcard removes only what the session may modify, silently keeping the
    // rest (writer: MODIFY under pub except pub/ro and the isolated pub/iso).
    let mut writer = session(&server, Some("writer")).await;
    writer
        .ok(json!({"type":"remove","selector":"?pub//"}))
        .await;
    let writer_model = Model::new(ROLES, &["WRITER"]);
    let left = fetch_paths(&mut observer, "?pub//").await;
    let expected: Vec<String> = {
        let mut all: Vec<&str> = CELL_PATHS
            .iter()
            .copied()
            .chain(later)
            .filter(|p| p.starts_with("pub/") && !writer_model.may(M, p))
            .collect();
        all.sort_unstable();
        all.into_iter().map(str::to_owned).collect()
    };
    assert_eq!(left, expected);
    assert!(
        !left.is_empty(),
        "the table must leave something writer may not remove"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// 2. Views cannot escalate.
// ---------------------------------------------------------------------------------------------

const ESCALATION_ROLES: &[Role] = &[
    Role {
        // May create views and do anything under public/ except public/locked, and may select
        // (but not read) private/.
        name: "SNEAK",
        global: &[MODIFY_VIEWS, READ_VIEWS],
        default_path: &[],
        paths: &[
            ("public", ALL),
            ("public/locked", &[S, R]),
            ("private", &[S]),
        ],
        isolated: &[],
        includes: &[],
    },
    Role {
        name: "SPECTATOR",
        global: &[],
        default_path: &[],
        paths: &[("public", &[S, R])],
        isolated: &[],
        includes: &[],
    },
    Role {
        name: "ADMIN",
        global: &[MODIFY_VIEWS, READ_VIEWS],
        default_path: ALL,
        paths: &[],
        isolated: &[],
        includes: &[],
    },
];

const ESCALATION_PRINCIPALS: &[Principal] = &[
    Principal {
        name: None,
        roles: &["SPECTATOR"],
    },
    Principal {
        name: Some("sneak"),
        roles: &["SNEAK"],
    },
    Principal {
        name: Some("admin"),
        roles: &["ADMIN"],
    },
];

/// Asserts nothing among `messages` is a `subscribed` to a path under one of `forbidden`, or
/// carries a private value.
fn assert_nothing_private(who: &str, messages: &[ServerMessage], forbidden: &[&str]) {
    for m in messages {
        if let ServerMessage::Subscribed { path, .. } = m {
            assert!(
                !forbidden
                    .iter()
                    .any(|f| path == f || path.starts_with(&format!("{f}/"))),
                "{who} was subscribed to {path}"
            );
        }
        let text = format!("{m:?}");
        assert!(
            !text.contains("secret"),
            "{who} received private data: {m:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_cannot_copy_what_their_creator_may_not_read_or_write_where_it_may_not_modify() {
    let (server, dir) = secured_server(
        "escalation",
        &store_toml(ESCALATION_ROLES, ESCALATION_PRINCIPALS),
    )
    .await;
    let mut admin = session(&server, Some("admin")).await;
    for (path, value) in [
        ("private/x", json!({"secret": "s0", "n": 0})),
        ("private/y", json!({"secret": "y0"})),
        ("public/src", json!({"n": 0})),
    ] {
        admin
            .ok(json!({"type":"add","path":path,"topicType":"JSON","value":value}))
            .await;
    }
    let mut sneak = session(&server, Some("sneak")).await;
    let mut spectator = session(&server, None).await;
    for selector in ["?public//", "?private//", "*.*"] {
        let reply = sneak
            .request(json!({"type":"subscribe","selector":selector}))
            .await;
        // "*.*" needs SELECT at the root, which sneak does not have.
        assert_eq!(allowed(selector, &reply), selector != "*.*", "{selector}");
    }
    spectator
        .ok(json!({"type":"subscribe","selector":"?public//"}))
        .await;
    let first = sneak.until_pong().await;
    assert_eq!(subscribed_paths(&first), ["public/src".to_owned()].into());
    let _ = spectator.until_pong().await;
    // sneak cannot read private/x directly.
    assert!(fetch(&mut sneak, "?private//").await.is_empty());

    // The escalation attempts: copy private/ into public/copy, insert private/x into a public
    // topic, and write a copy of a readable topic where sneak may not modify topics.
    sneak
        .ok(json!({"type":"createview","name":"copy",
                   "spec":"map ?private// to public/copy/<path(1)>"}))
        .await;
    sneak
        .ok(json!({"type":"createview","name":"joined",
                   "spec":"map public/src to public/joined insert private/x at /stolen"}))
        .await;
    sneak
        .ok(json!({"type":"createview","name":"locked",
                   "spec":"map public/src to public/locked/src"}))
        .await;
    // Controls: a view of what sneak may read, to where it may write, works; so does the
    // admin's own copy of private/ (so the test would see a copy if one were made).
    sneak
        .ok(json!({"type":"createview","name":"fine",
                   "spec":"map public/src to public/fine/src"}))
        .await;
    admin
        .ok(json!({"type":"createview","name":"admincopy",
                   "spec":"map ?private// to public/admincopy/<path(1)>"}))
        .await;

    for (round, phase) in ["created", "private updated", "source updated"]
        .into_iter()
        .enumerate()
    {
        match round {
            1 => {
                for n in 1..=3 {
                    admin
                        .ok(json!({"type":"set","path":"private/x","value":{"secret":format!("s{n}"),"n":n}}))
                        .await;
                }
                admin
                    .ok(json!({"type":"add","path":"private/z","topicType":"JSON","value":{"secret":"z"}}))
                    .await;
            }
            2 => {
                sneak
                    .ok(json!({"type":"set","path":"public/src","value":{"n":round}}))
                    .await;
            }
            _ => {}
        }
        let public = fetch(&mut sneak, "?public//").await;
        let paths: Vec<&str> = public.iter().map(|t| t.path.as_str()).collect();
        assert!(
            !paths
                .iter()
                .any(|p| p.starts_with("public/copy") || p.starts_with("public/locked")),
            "{phase}: sneak fetched {paths:?}"
        );
        for topic in &public {
            if !topic.path.starts_with("public/admincopy") {
                assert!(
                    !format!("{:?}", topic.value).contains("secret"),
                    "{phase}: {topic:?}"
                );
            }
        }
        let everything = fetch_paths(&mut admin, "*.*").await;
        assert!(
            !everything
                .iter()
                .any(|p| p.starts_with("public/copy") || p.starts_with("public/locked")),
            "{phase}: the tree holds {everything:?}"
        );
        assert!(
            everything.contains(&"public/fine/src".to_owned()),
            "{phase}"
        );
        assert!(
            everything.contains(&"public/admincopy/x".to_owned()),
            "{phase}"
        );
        let joined = value_at(&mut admin, "public/joined").await.unwrap();
        assert_eq!(
            joined,
            json!({"n": if round == 2 { 2 } else { 0 }}),
            "{phase}"
        );

        let sneak_saw = sneak.until_pong().await;
        let spectator_saw = spectator.until_pong().await;
        // Neither session is ever subscribed to a copy (public/admincopy is the admin's own
        // choice to publish, so it may be delivered).
        for (who, saw) in [("sneak", &sneak_saw), ("spectator", &spectator_saw)] {
            for m in saw {
                if let ServerMessage::Subscribed { path, .. } = m {
                    assert!(
                        !["public/copy", "public/locked", "private"]
                            .iter()
                            .any(|f| path.starts_with(f)),
                        "{phase}: {who} subscribed to {path}"
                    );
                }
            }
        }
    }

    // sneak replaces the admin's view: the view now runs with sneak's permissions, so the
    // admin's copies go and no copy of private/ appears in its new place either.
    sneak
        .ok(json!({"type":"createview","name":"admincopy",
                   "spec":"map ?private// to public/stolen/<path(1)>"}))
        .await;
    admin
        .ok(json!({"type":"set","path":"private/y","value":{"secret":"y1"}}))
        .await;
    let everything = fetch_paths(&mut admin, "*.*").await;
    assert!(
        !everything
            .iter()
            .any(|p| p.starts_with("public/stolen") || p.starts_with("public/admincopy")),
        "after the replacement the tree holds {everything:?}"
    );
    let sneak_saw = sneak.until_pong().await;
    assert_nothing_private(
        "sneak",
        &sneak_saw
            .into_iter()
            .filter(|m| !matches!(m, ServerMessage::Unsubscribed { .. }))
            .collect::<Vec<_>>(),
        &["public/copy", "public/locked", "public/stolen", "private"],
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// 3. Reload with SIGHUP, on the real binary.
// ---------------------------------------------------------------------------------------------

/// The topic-server binary, running; killed when dropped (also when a test panics).
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    fn start(security: &Path, web_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_topic-server"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--security")
            .arg(security)
            .arg("--web-dir")
            .arg(web_dir)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(parsed) = serde_json::from_str::<Value>(&line)
                        && parsed["fields"]["message"] == "topic server listening"
                        && let Some(addr) = parsed["fields"]["addr"].as_str()
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut process = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => process.addr = addr,
            Err(_) => panic!(
                "topic-server did not say where it listens:\n{}",
                process.log_text()
            ),
        }
        process
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn hang_up(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (bounded) until `needle` has been logged at least `times` times.
    async fn wait_logged(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + STEP;
        while self.logged(needle) < times {
            assert!(
                Instant::now() < deadline,
                "topic-server did not log {needle:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn process_session(server: &ServerProcess, principal: Option<&str>) -> Client {
    let mut client = Client::open(&server.ws_url()).await;
    let extra = match principal {
        Some(name) => json!({"principal": name, "credentials": password_of(name)}),
        None => json!({}),
    };
    let reply = client.handshake_with(extra).await;
    assert!(
        matches!(reply, ServerMessage::Connected { .. }),
        "{principal:?}: {reply:?}"
    );
    client
}

/// The reload test's roles: the anonymous WATCHER and the view-creating CURATOR change
/// between the two files, PUBLISHER does not.
fn reload_roles(
    watcher_paths: &'static [(&'static str, &'static [Perm])],
    curator_paths: &'static [(&'static str, &'static [Perm])],
) -> Vec<Role> {
    vec![
        Role {
            name: "WATCHER",
            global: &[],
            default_path: &[],
            paths: watcher_paths,
            isolated: &[],
            includes: &[],
        },
        Role {
            name: "CURATOR",
            global: &[MODIFY_VIEWS],
            default_path: &[],
            paths: curator_paths,
            isolated: &[],
            includes: &[],
        },
        Role {
            name: "PUBLISHER",
            global: &[],
            default_path: &[],
            paths: &[("feed", ALL)],
            isolated: &[],
            includes: &[],
        },
    ]
}

const RELOAD_PRINCIPALS: &[Principal] = &[
    Principal {
        name: None,
        roles: &["WATCHER"],
    },
    Principal {
        name: Some("publisher"),
        roles: &["PUBLISHER"],
    },
    Principal {
        name: Some("curator"),
        roles: &["CURATOR"],
    },
];

/// The next update (`value`) of topic `id`, skipping nothing else: any other message first is
/// a failure.
async fn next_value_of(client: &mut Client, id: u64) -> Value {
    match client.next().await {
        ServerMessage::Value { id: got, value } if got == id => value,
        other => panic!("expected a value of topic {id}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_ends_unreadable_subscriptions_and_a_broken_file_changes_nothing() {
    let dir = temp_dir("reload");
    let file = dir.join("security.toml");
    let before: &'static [(&str, &[Perm])] = &[("feed", &[S, R]), ("feed/hidden", &[S])];
    let after: &'static [(&str, &[Perm])] = &[("feed", &[S, R]), ("feed/secret", &[S])];
    let curator_before: &'static [(&str, &[Perm])] = &[("feed", &[R, M])];
    let curator_after: &'static [(&str, &[Perm])] = &[("feed", &[R, M]), ("feed/secret", &[])];
    write_atomically(
        &file,
        &store_toml(&reload_roles(before, curator_before), RELOAD_PRINCIPALS),
    );
    let web_dir = common::make_web_dir();
    let server = ServerProcess::start(&file, &web_dir);

    let mut publisher = process_session(&server, Some("publisher")).await;
    for path in ["feed/open/a", "feed/secret/b", "feed/hidden/c"] {
        publisher
            .ok(json!({"type":"add","path":path,"topicType":"JSON","value":{"n":0}}))
            .await;
    }
    let mut watcher = process_session(&server, None).await;
    watcher
        .ok(json!({"type":"subscribe","selector":"?feed//"}))
        .await;
    let seen = watcher.until_pong().await;
    let mut ids = BTreeMap::new();
    for m in &seen {
        if let ServerMessage::Subscribed { id, path, .. } = m {
            ids.insert(path.clone(), *id);
        }
    }
    assert_eq!(
        ids.keys().cloned().collect::<Vec<_>>(),
        ["feed/open/a", "feed/secret/b"],
        "{seen:?}"
    );

    // The curator copies feed/secret into feed/open, which the watcher may read: a plain
    // view, one that keeps its topics (`preserve topics`) and a delayed one (which also copies
    // feed/open/a, so its readable results show when its held ones are due).
    let mut curator = process_session(&server, Some("curator")).await;
    for (name, spec) in [
        ("copy", "map ?feed/secret// to feed/open/copy/<path(2)>"),
        (
            "kept",
            "map ?feed/secret// to feed/open/kept/<path(2)> preserve topics",
        ),
        (
            "late",
            "map *feed/(secret|open)/[a-z] to feed/open/late/<path(1)> delay by 1 second",
        ),
    ] {
        curator
            .ok(json!({"type":"createview","name":name,"spec":spec}))
            .await;
    }
    let copies = [
        "feed/open/copy/b",
        "feed/open/kept/b",
        "feed/open/late/secret/b",
        "feed/open/late/open/a",
    ];
    let mut copy_ids: BTreeMap<u64, String> = BTreeMap::new();
    let deadline = Instant::now() + STEP;
    while copy_ids.len() < copies.len() {
        assert!(Instant::now() < deadline, "copies made: {copy_ids:?}");
        if let ServerMessage::Subscribed { id, path, .. } = watcher.next().await {
            assert!(copies.contains(&path.as_str()), "{path}");
            copy_ids.insert(id, path);
        }
    }
    let _ = watcher.until_pong().await;
    // A change of the secret source just before the reload: the delayed view holds its
    // result, derived while the curator could still read it.
    publisher
        .ok(json!({"type":"set","path":"feed/secret/b","value":{"n":-1}}))
        .await;
    let _ = watcher.until_pong().await;

    // Tighten: feed/secret becomes unreadable for the watcher and the curator (and
    // feed/hidden readable for the watcher).
    write_atomically(
        &file,
        &store_toml(&reload_roles(after, curator_after), RELOAD_PRINCIPALS),
    );
    server.hang_up();
    let (mut ended, mut added) = (None, None);
    let mut copies_gone = BTreeSet::new();
    let expected_gone: BTreeSet<String> = copies[..3].iter().map(|p| (*p).to_owned()).collect();
    for _ in 0..16 {
        match watcher.next().await {
            ServerMessage::Unsubscribed { id, path, reason } if copy_ids.contains_key(&id) => {
                assert_eq!(reason, "removed", "{path}");
                copies_gone.insert(path);
            }
            ServerMessage::Unsubscribed { id, path, reason } => {
                assert_eq!(path, "feed/secret/b");
                assert_eq!(id, ids["feed/secret/b"]);
                assert_eq!(reason, "authorisation");
                ended = Some(id);
            }
            ServerMessage::Subscribed { id, path, .. } => {
                assert_eq!(path, "feed/hidden/c");
                added = Some(id);
            }
            ServerMessage::Value { id, value } => assert_eq!(
                Some(id),
                added,
                "after the reload, a value of {:?}: {value}",
                copy_ids.get(&id)
            ),
            other => panic!("after the reload: {other:?}"),
        }
        if ended.is_some() && added.is_some() && copies_gone == expected_gone {
            break;
        }
    }
    assert!(
        ended.is_some() && added.is_some() && copies_gone == expected_gone,
        "ended {ended:?}, added {added:?}, copies gone {copies_gone:?}"
    );
    server
        .wait_logged("security store reloaded; sessions re-checked", 1)
        .await;
    let hidden = added.unwrap();
    let _ = watcher.until_pong().await;
    // What the delayed view held from before the reload never lands: a change of feed/open/a
    // made now is due after it, and arrives alone.
    publisher
        .ok(json!({"type":"set","path":"feed/open/a","value":{"n":0.5}}))
        .await;
    let late_open = copy_ids
        .iter()
        .find(|(_, p)| *p == "feed/open/late/open/a")
        .map(|(id, _)| *id)
        .unwrap();
    let open = ids["feed/open/a"];
    assert_eq!(next_value_of(&mut watcher, open).await, json!({"n": 0.5}));
    assert_eq!(
        next_value_of(&mut watcher, late_open).await,
        json!({"n": 0.5})
    );
    assert!(watcher.until_pong().await.is_empty());
    assert!(
        fetch(&mut publisher, "?feed/open/late/secret//")
            .await
            .is_empty()
    );
    // The delayed view is done with (its later results would interleave below).
    curator.ok(json!({"type":"removeview","name":"late"})).await;
    let seen = watcher.until_pong().await;
    assert!(
        matches!(&seen[..], [ServerMessage::Unsubscribed { id, .. }] if *id == late_open),
        "{seen:?}"
    );

    // Readable subscriptions keep updating; the unreadable one gets nothing.
    for n in 1..=3 {
        publisher
            .ok(json!({"type":"set","path":"feed/secret/b","value":{"n":n}}))
            .await;
        publisher
            .ok(json!({"type":"set","path":"feed/open/a","value":{"n":n}}))
            .await;
        assert_eq!(next_value_of(&mut watcher, open).await, json!({"n": n}));
    }
    publisher
        .ok(json!({"type":"set","path":"feed/hidden/c","value":{"n":9}}))
        .await;
    assert_eq!(next_value_of(&mut watcher, hidden).await, json!({"n": 9}));
    assert!(watcher.until_pong().await.is_empty());
    // The curator's views, now running with the tightened role, copy nothing any more.
    for selector in [
        "?feed/open/copy//",
        "?feed/open/kept//",
        "?feed/open/late/secret//",
    ] {
        assert!(
            fetch(&mut publisher, selector).await.is_empty(),
            "{selector}"
        );
    }

    // A broken file is refused: logged, and the store in force (the tightened one) stays.
    std::fs::write(
        &file,
        "anonymous = [\"WATCHER\"]\n[roles.WATCHER]\npaths = { \"feed\" = [\"READ_TOPICS\"] }\n",
    )
    .unwrap();
    server.hang_up();
    server
        .wait_logged(
            "security file refused on reload; the previous store stays in force",
            1,
        )
        .await;
    assert!(server.logged("READ_TOPICS") > 0, "{}", server.log_text());
    // The session still receives what it may read, and still nothing of feed/secret.
    publisher
        .ok(json!({"type":"set","path":"feed/secret/b","value":{"n":10}}))
        .await;
    publisher
        .ok(json!({"type":"set","path":"feed/open/a","value":{"n":10}}))
        .await;
    assert_eq!(next_value_of(&mut watcher, open).await, json!({"n": 10}));
    assert!(watcher.until_pong().await.is_empty());
    for selector in [
        "?feed/open/copy//",
        "?feed/open/kept//",
        "?feed/open/late/secret//",
    ] {
        assert!(
            fetch(&mut publisher, selector).await.is_empty(),
            "{selector}"
        );
    }
    // New sessions authenticate under the old store: the publisher with its password, an
    // anonymous one with the tightened anonymous roles.
    let mut publisher2 = process_session(&server, Some("publisher")).await;
    publisher2
        .ok(json!({"type":"set","path":"feed/open/a","value":{"n":11}}))
        .await;
    assert_eq!(next_value_of(&mut watcher, open).await, json!({"n": 11}));
    let mut watcher2 = process_session(&server, None).await;
    watcher2
        .ok(json!({"type":"subscribe","selector":"?feed//"}))
        .await;
    let paths = subscribed_paths(&watcher2.until_pong().await);
    assert_eq!(
        paths,
        ["feed/hidden/c".to_owned(), "feed/open/a".to_owned()].into()
    );
    let mut wrong = Client::open(&server.ws_url()).await;
    let reply = wrong
        .handshake_with(json!({"principal":"publisher","credentials":"not the password"}))
        .await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::AuthenticationFailed,
                ..
            }
        ),
        "{reply:?}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(web_dir);
}

//! Real processes on free loopback ports: one nats-server with JetStream,
//! three ringcast nodes sharing it (a node optionally through a TCP proxy
//! that can cut it off NATS), optionally HAProxy in front; and clients that
//! talk to them over real sockets and keep what they received, so a test
//! can compare what every subscriber saw.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{assert_ts, json_reply, send, Ws};

/// Index of a node in `Cluster::node`.
pub const A: usize = 0;
pub const B: usize = 1;
pub const C: usize = 2;
const NODE_LABELS: [&str; 3] = ["node-a", "node-b", "node-c"];

/// How long a node may take from spawn (or restart) to `/health` 200:
/// connecting to NATS and replaying the stream, on a busy 2-core machine.
const NODE_READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long nats-server and HAProxy may take to accept connections.
const SERVICE_START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stopped process may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a client waits for the reply to one request.
const REPLY_DEADLINE: Duration = Duration::from_secs(10);
/// How long a subscriber waits for each event (or notice) it expects.
const EVENT_DEADLINE: Duration = Duration::from_secs(15);
/// How long `poll_until` sleeps between two probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often a starting node's `/health` is polled: often, so that a test
/// uses the node the moment it claims to be ready.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How long a subscriber stays quiet before `assert_nothing_more` looks for
/// late duplicates: longer than any cross-node hop should take when idle.
const SETTLE_TIME: Duration = Duration::from_millis(300);
/// Lines of a process log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// Contract, "Cluster durability": a node fails publishes for at most 12 s
/// in all when one NATS server of three dies.
pub const PUBLISH_OUTAGE_LIMIT: Duration = Duration::from_secs(12);
/// How long a client waits before sending a refused publish again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a `PublisherTask` may take to get the acks awaited.
const ACKS_DEADLINE: Duration = Duration::from_secs(30);

/// Set to `require` (CI does) to fail instead of skipping without the tools.
const REQUIRE_VAR: &str = "RINGCAST_CLUSTER_TESTS";

// ---------------------------------------------------------------- tools --

/// Where `tool` is installed: on PATH, or in the sbin directories where
/// Debian puts nats-server and haproxy but which a non-root PATH often lacks.
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// The paths of `tools`; None after a loud skip notice when one is missing,
/// or a failure instead when `RINGCAST_CLUSTER_TESTS=require`.
fn find_tools(tools: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = tools.iter().map(|tool| find_tool(tool)).collect();
    let missing: Vec<&str> = tools
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(tool, _)| *tool)
        .collect();
    if missing.is_empty() {
        return Some(found.into_iter().flatten().collect());
    }
    let missing = missing.join(", ");
    assert!(
        std::env::var(REQUIRE_VAR).as_deref() != Ok("require"),
        "{missing} not installed and {REQUIRE_VAR}=require: \
         run `apt-get install -y nats-server haproxy`"
    );
    // Straight to the stderr file descriptor: the test harness captures
    // eprintln! of passing tests, and a skip must not pass unnoticed.
    let test = current_test_name();
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! {test}: SKIPPED ({missing} not installed; \
         `apt-get install -y nats-server haproxy`, or set {REQUIRE_VAR}=require to fail instead)\n"
    );
    None
}

/// The running test's name: libtest names each test's thread after it, and
/// `#[tokio::test]` runs the test body on that thread.
fn current_test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("cluster");
    name.rsplit("::").next().unwrap_or(name).to_owned()
}

/// A loopback port that was free a moment ago and that no other process of
/// this test binary was given (the kernel may hand a released port out
/// again at once).
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("binding 127.0.0.1:0")
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Calls `probe` every POLL_INTERVAL until it returns `Ok`, failing after
/// `deadline` with `what` and the last thing the probe saw instead.
pub async fn poll_until<F, Fut>(what: &str, deadline: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let give_up = Instant::now() + deadline;
    loop {
        let Err(seen) = probe().await else {
            return;
        };
        assert!(
            Instant::now() < give_up,
            "timed out after {deadline:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ------------------------------------------------------------ processes --

/// A directory for one test's logs and NATS store: removed when the test
/// passes, kept (and named) when it fails.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!(
            "ringcast-cluster-{}-{}",
            current_test_name(),
            &unique[..8]
        ));
        fs::create_dir_all(&path).unwrap_or_else(|err| panic!("creating {path:?}: {err}"));
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- logs and NATS store kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process with stdout and stderr appended to a log file. It can be
/// stopped and started again with the same command line; dropping it kills
/// it, and prints the log's tail when the test is failing.
struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn start(
        name: &str,
        program: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Self {
        let mut process = Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|err| panic!("opening {:?}: {err}", self.log));
        writeln!(
            log,
            "==== starting {} {}",
            self.program.display(),
            self.args.join(" ")
        )
        .expect("writing the log header");
        let stdout = log.try_clone().expect("duplicating the log handle");
        let child = Command::new(&self.program)
            .args(&self.args)
            // Only what the test sets: a developer's RING_BUFFER_SIZE or
            // API_KEY must not leak into the nodes.
            .env_clear()
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", self.program.display()));
        self.child = Some(child);
    }

    fn child(&mut self) -> &mut Child {
        let name = &self.name;
        self.child
            .as_mut()
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    fn pid(&mut self) -> u32 {
        self.child().id()
    }

    /// Fails the test, showing the log, if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child().try_wait().expect("polling a child") {
            panic!(
                "{} exited with {status}; its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    async fn wait_for_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let give_up = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child().try_wait().expect("polling a child") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= give_up {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash would end it.
    async fn kill(&mut self) {
        self.child().kill().expect("sending SIGKILL");
        let name = self.name.clone();
        self.wait_for_exit(STOP_DEADLINE)
            .await
            .unwrap_or_else(|| panic!("{name} survived SIGKILL"));
    }

    /// Sends `SIG{signal}`, e.g. "TERM".
    fn signal(&mut self, signal: &str) {
        let pid = self.pid();
        // std has no signal API and libc is not a dev-dependency; the shell's
        // kill builtin is always there.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {pid}")])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid} failed: {status}");
    }

    /// SIGTERM, then waits for the process to exit.
    async fn terminate(&mut self) {
        self.signal("TERM");
        if self.wait_for_exit(STOP_DEADLINE).await.is_none() {
            panic!(
                "{} did not exit within {STOP_DEADLINE:?} of SIGTERM; log:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|err| format!("({err})"))
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} ({}), last {LOG_TAIL_LINES} lines:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// Polls until `process` accepts TCP connections on `port`.
async fn wait_for_listener(process: &mut Process, port: u16) {
    let give_up = Instant::now() + SERVICE_START_DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        process.assert_running();
        assert!(
            Instant::now() < give_up,
            "{} not accepting on port {port} after {SERVICE_START_DEADLINE:?}",
            process.name
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// nats-server with JetStream, its store in the test's scratch directory so
/// a restart finds the data again.
struct NatsServer {
    process: Process,
    port: u16,
}

/// The JetStream cluster's name, and its servers' name prefix.
const NATS_CLUSTER_NAME: &str = "ringcast-test";

impl NatsServer {
    async fn start(binary: &Path, dir: &Path) -> Self {
        let port = free_port();
        let mut process = Process::start(
            "nats-server",
            binary,
            Self::args(port, &dir.join("nats-store")),
            Vec::new(),
            dir,
        );
        wait_for_listener(&mut process, port).await;
        Self { process, port }
    }

    /// Starts `count` servers forming one JetStream cluster over loopback
    /// routes, each with its own store; server `i` is named `nats-<i>`.
    async fn start_cluster(binary: &Path, dir: &Path, count: usize) -> Vec<Self> {
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let route = |cluster_port: u16| format!("nats://127.0.0.1:{cluster_port}");
        let mut servers = Vec::new();
        for (i, &(port, cluster_port)) in ports.iter().enumerate() {
            let name = Self::name(i);
            let routes: Vec<String> = (ports.iter())
                .filter(|(_, other)| *other != cluster_port)
                .map(|&(_, other)| route(other))
                .collect();
            let mut args = Self::args(port, &dir.join(format!("{name}-store")));
            args.extend(
                [
                    "--server_name",
                    &name,
                    "--cluster_name",
                    NATS_CLUSTER_NAME,
                    "--cluster",
                    &route(cluster_port),
                    "--routes",
                    &routes.join(","),
                ]
                .map(str::to_owned),
            );
            let process = Process::start(&name, binary, args, Vec::new(), dir);
            servers.push(Self { process, port });
        }
        for server in &mut servers {
            wait_for_listener(&mut server.process, server.port).await;
        }
        servers
    }

    fn args(port: u16, store: &Path) -> Vec<String> {
        ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]
            .into_iter()
            .map(str::to_owned)
            .chain([store.display().to_string()])
            .collect()
    }

    /// The name of clustered server `index`.
    fn name(index: usize) -> String {
        format!("nats-{index}")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A TCP proxy between one node and nats-server, so that a test can cut
/// that node off NATS while the others stay connected. `cut` drops every
/// connection through it, and closes each new one at once, until `restore`.
/// A trap, when armed, cuts it the moment the node sends certain bytes,
/// which then never reach nats-server.
struct NatsLink {
    port: u16,
    cut: Arc<watch::Sender<bool>>,
    trap: Arc<Trap>,
    accepting: JoinHandle<()>,
}

/// Longest byte string a `Trap` can catch.
const MAX_TRAP_LEN: usize = 256;

/// The bytes a `NatsLink` is waiting for, if armed; disarmed when sprung.
#[derive(Default)]
struct Trap(std::sync::Mutex<Option<Vec<u8>>>);

impl Trap {
    fn arm(&self, bytes: &[u8]) {
        assert!(
            bytes.len() <= MAX_TRAP_LEN,
            "a trap of {} bytes",
            bytes.len()
        );
        *self.armed() = Some(bytes.to_vec());
    }

    /// Whether `sent` holds the armed bytes ending at or after `fresh_from`
    /// (bytes before it were forwarded already); disarms it if so.
    fn spring(&self, sent: &[u8], fresh_from: usize) -> bool {
        let mut armed = self.armed();
        let sprung = armed.as_ref().is_some_and(|bytes| {
            sent.windows(bytes.len())
                .enumerate()
                .any(|(at, window)| at + bytes.len() > fresh_from && window == &bytes[..])
        });
        if sprung {
            *armed = None;
        }
        sprung
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl NatsLink {
    fn start(nats_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .and_then(tokio::net::TcpListener::from_std)
            .expect("binding the NATS link");
        let port = listener
            .local_addr()
            .expect("the NATS link's address")
            .port();
        let cut = Arc::new(watch::Sender::new(false));
        let trap = Arc::new(Trap::default());
        let accepting = tokio::spawn(Self::accept(
            listener,
            nats_port,
            Arc::downgrade(&cut),
            trap.clone(),
        ));
        Self {
            port,
            cut,
            trap,
            accepting,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `cut` is weak so that the relays end when the link is dropped.
    async fn accept(
        listener: tokio::net::TcpListener,
        nats_port: u16,
        cut: std::sync::Weak<watch::Sender<bool>>,
        trap: Arc<Trap>,
    ) {
        loop {
            let Ok((node_side, _)) = listener.accept().await else {
                // Out of file descriptors, say: try again in a moment.
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            };
            let Some(mut is_cut) = cut.upgrade().map(|cut| cut.subscribe()) else {
                return;
            };
            let (cut, trap) = (cut.clone(), trap.clone());
            tokio::spawn(async move {
                // Ends, dropping both sockets, as soon as the link is cut
                // (at once if it is cut already) or dropped.
                tokio::select! {
                    biased;
                    _ = is_cut.wait_for(|cut| *cut) => {}
                    sprung = Self::relay(node_side, nats_port, &trap) => {
                        if let Some(cut) = cut.upgrade().filter(|_| sprung) {
                            cut.send_replace(true);
                        }
                    }
                }
            });
        }
    }

    /// Relays both ways until either side closes; true if it stopped
    /// because the node sent the trap's bytes.
    async fn relay(node_side: TcpStream, nats_port: u16, trap: &Trap) -> bool {
        let Ok(nats_side) = TcpStream::connect(("127.0.0.1", nats_port)).await else {
            return false;
        };
        let (mut from_nats, mut to_nats) = nats_side.into_split();
        let (mut from_node, mut to_node) = node_side.into_split();
        tokio::select! {
            _ = tokio::io::copy(&mut from_nats, &mut to_node) => false,
            sprung = Self::forward_until_trapped(&mut from_node, &mut to_nats, trap) => sprung,
        }
    }

    async fn forward_until_trapped(
        from_node: &mut tokio::net::tcp::OwnedReadHalf,
        to_nats: &mut tokio::net::tcp::OwnedWriteHalf,
        trap: &Trap,
    ) -> bool {
        let mut buffer = vec![0; 64 * 1024];
        // The last bytes forwarded and the new ones: a trap's bytes may
        // come split across two reads.
        let mut sent = Vec::new();
        loop {
            let read = match from_node.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(read) => read,
            };
            let fresh_from = sent.len();
            sent.extend_from_slice(&buffer[..read]);
            if trap.spring(&sent, fresh_from) {
                return true;
            }
            sent.drain(..sent.len().saturating_sub(MAX_TRAP_LEN));
            if to_nats.write_all(&buffer[..read]).await.is_err() {
                return false;
            }
        }
    }
}

impl Drop for NatsLink {
    fn drop(&mut self) {
        // The relays end when `cut` is dropped right after.
        self.accepting.abort();
    }
}

// ------------------------------------------------------------ endpoints --

/// Where a client talks to ringcast: a node, or HAProxy in front of them.
#[derive(Clone)]
pub struct Endpoint {
    pub label: String,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Endpoint {
    fn new(label: &str, port: u16) -> Self {
        Self {
            label: label.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            // A fresh client per endpoint incarnation: pooled connections
            // to a killed node are dead.
            http: reqwest::Client::builder()
                .timeout(REPLY_DEADLINE)
                .build()
                .expect("building the HTTP client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The status of `GET path`, None while nothing answers.
    async fn status_of(&self, path: &str) -> Option<u16> {
        let response = self.http.get(self.url(path)).send().await.ok()?;
        Some(response.status().as_u16())
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await;
        json_reply(response.unwrap_or_else(|err| panic!("GET {path} on {}: {err}", self.label)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(self.url(path)).json(body).send().await;
        json_reply(response.unwrap_or_else(|err| panic!("POST {path} on {}: {err}", self.label)))
            .await
    }

    pub async fn delete_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.delete(self.url(path)).send().await;
        json_reply(response.unwrap_or_else(|err| panic!("DELETE {path} on {}: {err}", self.label)))
            .await
    }

    /// Opens `GET /sse?<query>`, resuming from `last_event_id` if given.
    pub async fn sse(&self, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(&format!("/sse?{query}")));
        if let Some(cursor) = last_event_id {
            request = request.header("Last-Event-ID", cursor);
        }
        request.send().await.expect("GET /sse")
    }

    pub async fn health(&self) -> (u16, Value) {
        self.get_json("/health").await
    }

    /// `POST /topics`, whatever the outcome.
    pub async fn try_create_topic(&self, name: &str) -> (u16, Value) {
        self.post_json("/topics", &json!({ "name": name })).await
    }

    /// `POST /topics`, asserting the 201 reply.
    pub async fn create_topic(&self, name: &str) {
        let reply = self.try_create_topic(name).await;
        assert_eq!(
            reply,
            (201, json!({ "status": "created", "topic": name })),
            "creating {name} on {}",
            self.label
        );
    }

    /// Topic names per `GET /topics`, sorted.
    pub async fn topic_names(&self) -> Vec<String> {
        let (status, body) = self.get_json("/topics").await;
        assert_eq!(status, 200, "GET /topics on {}: {body}", self.label);
        let mut names: Vec<String> = body["topics"]
            .as_array()
            .unwrap_or_else(|| panic!("topics must be an array: {body}"))
            .iter()
            .map(|row| row["name"].as_str().expect("topic name").to_owned())
            .collect();
        names.sort();
        names
    }

    /// Opens `/ws`.
    async fn ws(&self) -> Ws {
        let url = format!("ws://{}/ws", self.addr);
        let connect = tokio_tungstenite::connect_async(url);
        match tokio::time::timeout(REPLY_DEADLINE, connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(err)) => panic!("WebSocket connect to {}: {err}", self.label),
            Err(_) => panic!("WebSocket connect to {} timed out", self.label),
        }
    }
}

/// A ringcast process in cluster mode.
struct Node {
    api: Endpoint,
    process: Process,
}

impl Node {
    /// Spawns without waiting; see `wait_ready`.
    fn spawn(label: &str, binary: &Path, mut env: Vec<(String, String)>, dir: &Path) -> Self {
        let port = free_port();
        env.push(("PORT".into(), port.to_string()));
        Self {
            api: Endpoint::new(label, port),
            process: Process::start(label, binary, Vec::new(), env, dir),
        }
    }

    /// Polls `/health` until 200; fails if the process exits meanwhile.
    async fn wait_ready(&mut self) {
        let give_up = Instant::now() + NODE_READY_DEADLINE;
        loop {
            let status = self.api.status_of("/health").await;
            if status == Some(200) {
                return;
            }
            self.process.assert_running();
            assert!(
                Instant::now() < give_up,
                "{} not healthy after {NODE_READY_DEADLINE:?}; /health: {status:?}",
                self.api.label
            );
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }
}

/// HAProxy running `deploy/haproxy.cfg` in front of the three nodes.
struct HaProxy {
    api: Endpoint,
    process: Process,
}

impl HaProxy {
    async fn start(binary: &Path, nodes: &[Node], dir: &Path) -> Self {
        let port = free_port();
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg");
        let mut env = vec![
            (
                "RINGCAST_FRONTEND_BIND".to_owned(),
                format!("127.0.0.1:{port}"),
            ),
            // The tests need a few dozen connections; the default 9000
            // depends on the open-files limit.
            ("HAPROXY_MAXCONN".to_owned(), "1000".to_owned()),
        ];
        for (i, node) in nodes.iter().enumerate() {
            env.push((format!("RINGCAST_NODE{}", i + 1), node.api.addr.to_string()));
        }
        let args = vec!["-db".to_owned(), "-f".to_owned(), config.to_owned()];
        let mut proxy = Self {
            api: Endpoint::new("haproxy", port),
            process: Process::start("haproxy", binary, args, env, dir),
        };
        poll_until(
            "HAProxy to serve /health 200",
            SERVICE_START_DEADLINE,
            || {
                proxy.process.assert_running();
                let api = proxy.api.clone();
                async move {
                    match api.status_of("/health").await {
                        Some(200) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                }
            },
        )
        .await;
        proxy
    }
}

// -------------------------------------------------------------- cluster --

/// What to start: three nodes, and optionally HAProxy.
#[derive(Default)]
pub struct ClusterSpec {
    node_env: Vec<(String, String)>,
    haproxy: bool,
    /// Nodes that reach nats-server through a `NatsLink`.
    linked: Vec<usize>,
    /// `CLUSTER_NATS_URL` lists an address where nothing listens first.
    dead_server_first: bool,
    /// Three clustered nats-servers instead of one.
    nats_cluster: bool,
}

impl ClusterSpec {
    /// An extra environment variable for every node, e.g. RING_BUFFER_SIZE.
    pub fn node_env(mut self, key: &str, value: &str) -> Self {
        self.node_env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn behind_haproxy(mut self) -> Self {
        self.haproxy = true;
        self
    }

    /// Node `index` reaches nats-server through a proxy, so that
    /// `Cluster::cut_nats_link` can cut it off alone.
    pub fn nats_link(mut self, index: usize) -> Self {
        self.linked.push(index);
        self
    }

    /// Every node's `CLUSTER_NATS_URL` is a comma-separated list whose first
    /// address has no server behind it, as after losing one of several.
    pub fn dead_server_first(mut self) -> Self {
        self.dead_server_first = true;
        self
    }

    /// Three nats-servers in one JetStream cluster; every node is given all
    /// three URLs. Nodes start once the cluster can place a stream with
    /// three replicas.
    pub fn nats_cluster(mut self) -> Self {
        self.nats_cluster = true;
        self
    }

    /// Starts everything and waits until it is healthy; None when the tools
    /// are missing and the test is skipped.
    pub async fn start(self) -> Option<Cluster> {
        let tools = if self.haproxy {
            vec!["nats-server", "haproxy"]
        } else {
            vec!["nats-server"]
        };
        let paths = find_tools(&tools)?;
        let dir = ScratchDir::new();
        let nats = match self.nats_cluster {
            true => {
                let servers = NatsServer::start_cluster(&paths[0], &dir.0, NATS_CLUSTER_SIZE).await;
                await_replicated_placement(&servers).await;
                servers
            }
            false => vec![NatsServer::start(&paths[0], &dir.0).await],
        };
        let binary = Path::new(env!("CARGO_BIN_EXE_ringcast"));
        let nats_links: Vec<Option<NatsLink>> = (0..NODE_LABELS.len())
            .map(|index| {
                self.linked
                    .contains(&index)
                    .then(|| NatsLink::start(nats[0].port))
            })
            .collect();
        let mut nodes: Vec<Node> = NODE_LABELS
            .iter()
            .zip(&nats_links)
            .map(|(label, link)| {
                let mut nats_url = link
                    .as_ref()
                    .map_or_else(|| nats_urls(&nats), NatsLink::url);
                if self.dead_server_first {
                    nats_url = format!("nats://127.0.0.1:{},{nats_url}", free_port());
                }
                let env = node_environment(&nats_url, &self.node_env);
                Node::spawn(label, binary, env, &dir.0)
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready().await;
        }
        let proxy = match self.haproxy {
            true => Some(HaProxy::start(&paths[1], &nodes, &dir.0).await),
            false => None,
        };
        Some(Cluster {
            nodes,
            nats_links,
            proxy,
            nats,
            _dir: dir,
        })
    }
}

/// Servers in `ClusterSpec::nats_cluster`: as many as the replicas.
const NATS_CLUSTER_SIZE: usize = 3;

/// Every server's URL, comma-separated, as `CLUSTER_NATS_URL` takes them.
fn nats_urls(servers: &[NatsServer]) -> String {
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    urls.join(",")
}

/// A JetStream client of `servers`: it connects to any of them.
async fn jetstream_of(servers: &[NatsServer]) -> async_nats::jetstream::Context {
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    let client = async_nats::connect(urls)
        .await
        .expect("connecting to nats-server");
    async_nats::jetstream::new(client)
}

/// Waits until the JetStream cluster of `servers` has elected its leader
/// and knows every server: it places (then deletes) a stream with a
/// replica on each.
async fn await_replicated_placement(servers: &[NatsServer]) {
    let jetstream = jetstream_of(servers).await;
    let probe = async_nats::jetstream::stream::Config {
        name: "HARNESS_PLACEMENT_PROBE".into(),
        subjects: vec!["harness.placement.probe".into()],
        num_replicas: NATS_CLUSTER_SIZE,
        ..Default::default()
    };
    poll_until(
        "the NATS cluster to place a stream on every server",
        NODE_READY_DEADLINE,
        || {
            let (jetstream, probe) = (jetstream.clone(), probe.clone());
            async move {
                jetstream
                    .create_stream(probe)
                    .await
                    .map(drop)
                    .map_err(|err| err.to_string())
            }
        },
    )
    .await;
    jetstream
        .delete_stream("HARNESS_PLACEMENT_PROBE")
        .await
        .expect("deleting the placement probe");
}

/// A node's environment: `CLUSTER_NATS_URL`, then `extra`.
fn node_environment(nats_url: &str, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1"),
        ("CLUSTER_NATS_URL", nats_url),
        ("RUST_LOG", "warn,ringcast=info"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    env.extend(extra.iter().cloned());
    env
}

/// Starts one nats-server and one node with the extra environment `env`,
/// and waits for the node to exit by itself: its exit status and log. None
/// when nats-server is missing and the test is skipped.
pub async fn lone_node_exit(env: &[(&str, &str)]) -> Option<(ExitStatus, String)> {
    let paths = find_tools(&["nats-server"])?;
    let dir = ScratchDir::new();
    let nats = NatsServer::start(&paths[0], &dir.0).await;
    let binary = Path::new(env!("CARGO_BIN_EXE_ringcast"));
    let extra: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let env = node_environment(&nats.url(), &extra);
    let mut node = Node::spawn(NODE_LABELS[0], binary, env, &dir.0);
    let status = node.process.wait_for_exit(NODE_READY_DEADLINE).await;
    let log = node.process.log_text();
    let status = status.unwrap_or_else(|| {
        panic!(
            "{} still running after {NODE_READY_DEADLINE:?}; log:\n{log}",
            node.api.label
        )
    });
    Some((status, log))
}

/// One test's cluster. Dropping it kills every process (nodes first, the
/// scratch directory last), printing their logs if the test failed.
pub struct Cluster {
    nodes: Vec<Node>,
    /// Per node, the proxy it reaches nats-server through, if any.
    nats_links: Vec<Option<NatsLink>>,
    proxy: Option<HaProxy>,
    /// One server, or `NATS_CLUSTER_SIZE` in one JetStream cluster.
    nats: Vec<NatsServer>,
    _dir: ScratchDir,
}

impl Cluster {
    /// Three nodes with default settings.
    pub async fn start() -> Option<Self> {
        ClusterSpec::default().start().await
    }

    pub fn spec() -> ClusterSpec {
        ClusterSpec::default()
    }

    pub fn node(&self, index: usize) -> &Endpoint {
        &self.nodes[index].api
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Endpoint> {
        self.nodes.iter().map(|node| &node.api)
    }

    /// The HAProxy frontend.
    pub fn proxy(&self) -> &Endpoint {
        &self.proxy.as_ref().expect("started without HAProxy").api
    }

    /// What HAProxy has logged so far.
    pub fn proxy_log(&self) -> String {
        let proxy = self.proxy.as_ref().expect("started without HAProxy");
        proxy.process.log_text()
    }

    /// SIGKILL, like a crash: no shutdown, no flush.
    pub async fn kill_node(&mut self, index: usize) {
        self.nodes[index].process.kill().await;
    }

    /// Starts a killed or stopped node again on the same port and waits
    /// until healthy.
    pub async fn restart_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.process.spawn();
        node.api = Endpoint::new(&node.api.label, node.api.addr.port());
        node.wait_ready().await;
    }

    /// Sets `key` to `value` in node `index`'s environment, for its next
    /// start (see `restart_node`).
    pub fn set_node_env(&mut self, index: usize, key: &str, value: &str) {
        let env = &mut self.nodes[index].process.env;
        env.retain(|(existing, _)| existing != key);
        env.push((key.to_owned(), value.to_owned()));
    }

    /// SIGTERM, as an orchestrator stops a node: waits until it has shut
    /// down gracefully and exited. `restart_node` starts it again.
    pub async fn stop_node(&mut self, index: usize) {
        self.nodes[index].process.terminate().await;
    }

    /// SIGSTOP: the node is frozen, its sockets stay open and fill up.
    pub fn pause_node(&mut self, index: usize) {
        self.nodes[index].process.signal("STOP");
    }

    /// SIGCONT after `pause_node`.
    pub fn resume_node(&mut self, index: usize) {
        self.nodes[index].process.signal("CONT");
    }

    /// Stops nats-server gracefully (SIGTERM) and waits for it to exit.
    pub async fn stop_nats(&mut self) {
        self.nats[0].process.terminate().await;
    }

    /// SIGSTOP nats-server: the nodes' connections stay up and requests
    /// (publish acks among them) go unanswered until `resume_nats`.
    pub fn pause_nats(&mut self) {
        self.nats[0].process.signal("STOP");
    }

    /// SIGCONT after `pause_nats`.
    pub fn resume_nats(&mut self) {
        self.nats[0].process.signal("CONT");
    }

    /// Starts nats-server again on the same port with the same store.
    pub async fn restart_nats(&mut self) {
        self.restart_nats_server(0).await;
    }

    /// SIGKILL of clustered nats-server `index`, like a crash.
    pub async fn kill_nats_server(&mut self, index: usize) {
        self.nats[index].process.kill().await;
    }

    /// Starts nats-server `index` again on the same ports with the same
    /// store.
    pub async fn restart_nats_server(&mut self, index: usize) {
        let server = &mut self.nats[index];
        server.process.spawn();
        wait_for_listener(&mut server.process, server.port).await;
    }

    /// The index of the clustered nats-server leading `stream`, as
    /// `$JS.API.STREAM.INFO` reports it (polled through an election).
    pub async fn stream_leader(&self, stream: &str) -> usize {
        let jetstream = self.jetstream().await;
        let give_up = Instant::now() + NODE_READY_DEADLINE;
        loop {
            let leader = match jetstream.get_stream(stream).await {
                Ok(info) => {
                    (info.cached_info().cluster.as_ref()).and_then(|cluster| cluster.leader.clone())
                }
                Err(_) => None,
            };
            let index = (0..self.nats.len()).find(|&i| leader == Some(NatsServer::name(i)));
            if let Some(index) = index {
                return index;
            }
            assert!(
                Instant::now() < give_up,
                "{stream} without a leader after {NODE_READY_DEADLINE:?}: {leader:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every replica of `stream` is current: a server that was
    /// restarted has caught up.
    pub async fn await_replicas_current(&self, stream: &str) {
        let jetstream = self.jetstream().await;
        poll_until(
            &format!("every replica of {stream} to be current"),
            NODE_READY_DEADLINE,
            || {
                let jetstream = jetstream.clone();
                async move {
                    let info = jetstream
                        .get_stream(stream)
                        .await
                        .map_err(|err| err.to_string())?;
                    let cluster = info
                        .cached_info()
                        .cluster
                        .clone()
                        .ok_or("no cluster info")?;
                    let current = cluster
                        .replicas
                        .iter()
                        .filter(|replica| replica.current && !replica.offline)
                        .count();
                    match cluster.leader.is_some() && current + 1 == NATS_CLUSTER_SIZE {
                        true => Ok(()),
                        false => Err(format!("{cluster:?}")),
                    }
                }
            },
        )
        .await;
    }

    /// A JetStream client of the cluster's nats-server(s), as any NATS
    /// client could have: to look into the stream, or write to it behind
    /// the nodes' backs.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        jetstream_of(&self.nats).await
    }

    /// Cuts node `index` (started with `nats_link(index)`) off nats-server:
    /// its connections to NATS are dropped, and it cannot open new ones
    /// until `restore_nats_link`. The other nodes are not affected.
    pub fn cut_nats_link(&self, index: usize) {
        self.nats_link(index).cut.send_replace(true);
    }

    /// Arms node `index`'s NATS link to cut it off, as `cut_nats_link`
    /// does, the moment the node sends `bytes` (which never reach
    /// nats-server), e.g. a JetStream API subject.
    pub fn cut_nats_link_when_sent(&self, index: usize, bytes: &str) {
        self.nats_link(index).trap.arm(bytes.as_bytes());
    }

    /// Lets node `index` reach nats-server again after `cut_nats_link`.
    pub fn restore_nats_link(&self, index: usize) {
        self.nats_link(index).cut.send_replace(false);
    }

    fn nats_link(&self, index: usize) -> &NatsLink {
        self.nats_links[index].as_ref().unwrap_or_else(|| {
            panic!(
                "{} was started without a NATS link",
                self.nodes[index].api.label
            )
        })
    }
}

// -------------------------------------------------------------- clients --

/// One `event` frame as a subscriber received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    pub seq: u64,
    pub ts: String,
    pub payload: Value,
}

impl Event {
    /// Parses an `event` frame of `topic`, failing on anything else.
    fn parse(frame: &Value, topic: &str, receiver: &str) -> Self {
        assert_eq!(
            frame["type"], "event",
            "{receiver}: expected an event: {frame}"
        );
        assert_eq!(frame["topic"], topic, "{receiver}: {frame}");
        assert_ts(frame);
        let field = |value: &Value, what: &str| {
            value
                .as_str()
                .unwrap_or_else(|| panic!("{receiver}: event without {what}: {frame}"))
                .to_owned()
        };
        Self {
            id: field(&frame["message"]["id"], "message.id"),
            seq: frame["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{receiver}: event without seq: {frame}")),
            ts: field(&frame["ts"], "ts"),
            payload: frame["message"]["payload"].clone(),
        }
    }
}

/// `(seq, id)` of each event: what failure messages show.
pub fn summary(events: &[Event]) -> Vec<(u64, &str)> {
    events
        .iter()
        .map(|event| (event.seq, event.id.as_str()))
        .collect()
}

/// An acknowledged publish.
#[derive(Clone, Debug)]
pub struct Acked {
    pub publisher: String,
    pub id: String,
    pub payload: Value,
    /// The seq of the reply (a REST reply or a WebSocket ack); none for
    /// a publish sent without waiting for its ack.
    pub seq: Option<u64>,
    /// Whether the reply said `"duplicate":true`.
    pub duplicate: bool,
}

/// The next publish of `publisher`: a fresh UUID (the cluster drops repeated
/// ids) and a payload naming the publisher and counting its publishes.
fn next_message(publisher: &str, published: &mut u64) -> (String, Value) {
    *published += 1;
    let id = uuid::Uuid::new_v4().to_string();
    (id, json!({ "publisher": publisher, "n": *published }))
}

/// A WebSocket connection that remembers every event it received.
pub struct Client {
    pub label: String,
    ws: Ws,
    requests: u64,
    published: u64,
    /// Every event received, replayed and live, in arrival order.
    pub received: Vec<Event>,
}

impl Client {
    /// Connects to `endpoint`; `name` (e.g. "sub1") labels it in failures.
    pub async fn connect(endpoint: &Endpoint, name: &str) -> Self {
        Self {
            label: format!("{name}@{}", endpoint.label),
            ws: endpoint.ws().await,
            requests: 0,
            published: 0,
            received: Vec::new(),
        }
    }

    /// The next frame that is not a heartbeat, within `deadline`.
    async fn next_frame(&mut self, deadline: Duration, waiting_for: &str) -> Value {
        loop {
            let next = tokio::time::timeout(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: nothing within {deadline:?} waiting for {waiting_for}",
                        self.label
                    )
                });
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(err)) => panic!("{}: {err} waiting for {waiting_for}", self.label),
                None => panic!("{}: connection ended waiting for {waiting_for}", self.label),
            };
            match message {
                Message::Text(text) => match parse_frame(&text) {
                    Some(frame) => return frame,
                    None => continue,
                },
                Message::Close(close) => {
                    panic!(
                        "{}: closed ({close:?}) waiting for {waiting_for}",
                        self.label
                    )
                }
                _ => continue,
            }
        }
    }

    /// Reads until the server closes the connection, asserting the close
    /// code; returns the frames that came before the close.
    pub async fn expect_close(&mut self, code: u16) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(EVENT_DEADLINE, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: not closed within {EVENT_DEADLINE:?}; frames meanwhile: {frames:?}",
                        self.label
                    )
                });
            match next {
                Some(Ok(Message::Text(text))) => frames.extend(parse_frame(&text)),
                Some(Ok(Message::Close(close))) => {
                    let closed_with = close.as_ref().map(|close| u16::from(close.code));
                    assert_eq!(
                        closed_with,
                        Some(code),
                        "{}: closed with {close:?} after {frames:?}",
                        self.label
                    );
                    return frames;
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!(
                    "{}: {err} before a close frame, after {frames:?}",
                    self.label
                ),
                None => panic!(
                    "{}: connection ended without a close frame, after {frames:?}",
                    self.label
                ),
            }
        }
    }

    fn request_id(&mut self) -> String {
        self.requests += 1;
        format!("{}-{}", self.label, self.requests)
    }

    /// Sends `frame` with a fresh request id; returns the reply, which must
    /// be the next frame.
    async fn request(&mut self, mut frame: Value) -> Value {
        let request_id = self.request_id();
        frame["request_id"] = json!(request_id);
        send(&mut self.ws, frame.clone()).await;
        let reply = self
            .next_frame(REPLY_DEADLINE, &format!("the reply to {frame}"))
            .await;
        assert_eq!(
            reply["request_id"], request_id,
            "{}: expected the reply to {frame}, got {reply}",
            self.label
        );
        assert_ts(&reply);
        reply
    }

    /// Subscribes; returns the replayed events, or the error frame.
    pub async fn try_subscribe(&mut self, topic: &str, last_n: u64) -> Result<Vec<Event>, Value> {
        let replay = json!({ "last_n": last_n });
        Ok(self.subscribe_with(topic, replay).await?.1)
    }

    /// Subscribes to resume after `since_seq` (of `epoch`, when given):
    /// the ack and the replayed events.
    pub async fn resume(
        &mut self,
        topic: &str,
        since_seq: u64,
        epoch: Option<&Value>,
    ) -> (Value, Vec<Event>) {
        let mut replay = json!({ "since_seq": since_seq });
        if let Some(epoch) = epoch {
            replay["epoch"] = epoch.clone();
        }
        let label = self.label.clone();
        self.subscribe_with(topic, replay)
            .await
            .unwrap_or_else(|error| panic!("{label}: resuming {topic}: {error}"))
    }

    /// Subscribes with `replay` (its fields go into the frame); the ack
    /// and the replayed events, or the error frame.
    async fn subscribe_with(
        &mut self,
        topic: &str,
        replay: Value,
    ) -> Result<(Value, Vec<Event>), Value> {
        let mut frame = json!({ "type": "subscribe", "topic": topic });
        frame
            .as_object_mut()
            .expect("an object")
            .extend(replay.as_object().expect("an object").clone());
        let reply = self.request(frame).await;
        if reply["type"] != "ack" {
            return Err(reply);
        }
        assert_ack(&reply, topic, &self.label);
        // The replay is queued behind the ack; a ping's pong comes after it.
        let replayed: Vec<Event> = (self.frames_until_pong().await.iter())
            .map(|frame| Event::parse(frame, topic, &self.label))
            .collect();
        self.received.extend(replayed.iter().cloned());
        Ok((reply, replayed))
    }

    /// Subscribes, asserting the ack; returns the replayed events.
    pub async fn subscribe(&mut self, topic: &str, last_n: u64) -> Vec<Event> {
        let label = self.label.clone();
        self.try_subscribe(topic, last_n)
            .await
            .unwrap_or_else(|error| panic!("{label}: subscribing to {topic}: {error}"))
    }

    /// Subscribes as `client_id`, asserting the ack.
    pub async fn subscribe_as(&mut self, topic: &str, client_id: &str) {
        let label = self.label.clone();
        self.subscribe_with(topic, json!({ "client_id": client_id }))
            .await
            .unwrap_or_else(|error| panic!("{label}: subscribing to {topic}: {error}"));
    }

    /// Unsubscribes, asserting the ack.
    pub async fn unsubscribe(&mut self, topic: &str) {
        let reply = self
            .request(json!({ "type": "unsubscribe", "topic": topic }))
            .await;
        assert_ack(&reply, topic, &self.label);
    }

    /// Sends a ping and returns the frames that arrive before its pong.
    async fn frames_until_pong(&mut self) -> Vec<Value> {
        let request_id = self.request_id();
        send(
            &mut self.ws,
            json!({ "type": "ping", "request_id": request_id }),
        )
        .await;
        let mut frames = Vec::new();
        loop {
            let frame = self.next_frame(REPLY_DEADLINE, "a pong").await;
            if frame["type"] == "pong" && frame["request_id"] == request_id {
                return frames;
            }
            frames.push(frame);
        }
    }

    /// Publishes one event; the ack, or the error frame.
    pub async fn publish(&mut self, topic: &str) -> Result<Acked, Value> {
        let (id, payload) = next_message(&self.label, &mut self.published);
        self.send_message(topic, id, payload).await
    }

    /// Publishes one event until it is acknowledged, sending it again with
    /// the same id after each error reply, as a client retries (the id
    /// makes JetStream store it once). Every reply must come within
    /// REPLY_DEADLINE, every refusal be `INTERNAL`, and the refusals stop
    /// within PUBLISH_OUTAGE_LIMIT. The ack, and when each refusal came.
    pub async fn publish_until_acked(&mut self, topic: &str) -> (Acked, Vec<Instant>) {
        let (id, payload) = next_message(&self.label, &mut self.published);
        let mut refused_at: Vec<Instant> = Vec::new();
        loop {
            match self.send_message(topic, id.clone(), payload.clone()).await {
                Ok(acked) => return (acked, refused_at),
                Err(refusal) => {
                    assert_error_frame(&refusal, "INTERNAL", &self.label);
                    let now = Instant::now();
                    let first = *refused_at.first().unwrap_or(&now);
                    assert!(
                        now - first <= PUBLISH_OUTAGE_LIMIT,
                        "{}: publishes refused for more than {PUBLISH_OUTAGE_LIMIT:?}: {refusal}",
                        self.label
                    );
                    refused_at.push(now);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Publishes `earlier`'s message again: same id, same payload.
    pub async fn republish(&mut self, topic: &str, earlier: &Acked) -> Result<Acked, Value> {
        let (id, payload) = (earlier.id.clone(), earlier.payload.clone());
        self.send_message(topic, id, payload).await
    }

    async fn send_message(
        &mut self,
        topic: &str,
        id: String,
        payload: Value,
    ) -> Result<Acked, Value> {
        let reply = self.request(publish_frame(topic, &id, &payload)).await;
        if reply["type"] != "ack" {
            return Err(reply);
        }
        assert_ack(&reply, topic, &self.label);
        Ok(Acked {
            seq: reply["seq"].as_u64(),
            duplicate: reply["duplicate"] == true,
            ..self.acked(id, payload)
        })
    }

    fn acked(&self, id: String, payload: Value) -> Acked {
        Acked {
            publisher: self.label.clone(),
            id,
            payload,
            seq: None,
            duplicate: false,
        }
    }

    /// Sends `count` publishes without waiting for their replies; returns
    /// their request ids and what an ack of each would acknowledge.
    pub async fn send_publishes(
        &mut self,
        topic: &str,
        count: usize,
    ) -> (HashSet<String>, Vec<Acked>) {
        let mut pending = HashSet::new();
        let mut sent = Vec::new();
        for _ in 0..count {
            let (id, payload) = next_message(&self.label, &mut self.published);
            let mut frame = publish_frame(topic, &id, &payload);
            let request_id = self.request_id();
            frame["request_id"] = json!(request_id);
            send(&mut self.ws, frame).await;
            pending.insert(request_id);
            sent.push(self.acked(id, payload));
        }
        (pending, sent)
    }

    /// Sends `count` publishes without waiting, then collects their acks
    /// (matched by request id), so several are in flight at once.
    pub async fn publish_burst(&mut self, topic: &str, count: usize) -> Vec<Acked> {
        let (mut pending, sent) = self.send_publishes(topic, count).await;
        while !pending.is_empty() {
            let reply = self
                .next_frame(
                    REPLY_DEADLINE,
                    &format!("{} more publish acks", pending.len()),
                )
                .await;
            let request_id = reply["request_id"].as_str().unwrap_or_default();
            assert!(
                pending.remove(request_id),
                "{}: not the reply to a pending publish: {reply}",
                self.label
            );
            assert_ack(&reply, topic, &self.label);
        }
        sent
    }

    /// Waits for `count` more events of `topic`, nothing else in between.
    pub async fn expect_events(&mut self, topic: &str, count: usize) {
        let start = self.received.len();
        for n in 1..=count {
            let waiting_for = format!(
                "event {n} of {count} on {topic} (received so far: {:?})",
                summary(&self.received[start..])
            );
            let frame = self.next_frame(EVENT_DEADLINE, &waiting_for).await;
            let event = Event::parse(&frame, topic, &self.label);
            self.received.push(event);
        }
    }

    /// The next frame that is not a heartbeat, checked to carry `ts`.
    pub async fn expect_frame(&mut self, waiting_for: &str) -> Value {
        let frame = self.next_frame(EVENT_DEADLINE, waiting_for).await;
        assert_ts(&frame);
        frame
    }

    /// Waits for the notice that `topic` was deleted.
    pub async fn expect_topic_deleted(&mut self, topic: &str) {
        let frame = self
            .next_frame(EVENT_DEADLINE, &format!("topic_deleted of {topic}"))
            .await;
        assert_eq!(
            (&frame["type"], &frame["topic"], &frame["msg"]),
            (&json!("info"), &json!(topic), &json!("topic_deleted")),
            "{}: {frame}",
            self.label
        );
        assert_ts(&frame);
    }

    /// Asserts the connection is open and nothing is queued for it: the
    /// pong to a ping is the next frame.
    pub async fn assert_nothing_pending(&mut self) {
        let queued = self.frames_until_pong().await;
        assert!(
            queued.is_empty(),
            "{}: unexpected frames: {queued:?}",
            self.label
        );
    }
}

/// A text frame from the server, None for a heartbeat.
fn parse_frame(text: &str) -> Option<Value> {
    let frame: Value = serde_json::from_str(text).expect("server sent JSON");
    let heartbeat = frame["type"] == "info" && frame["msg"] == "ping";
    (!heartbeat).then_some(frame)
}

/// A `publish` frame without a request id.
fn publish_frame(topic: &str, id: &str, payload: &Value) -> Value {
    json!({
        "type": "publish",
        "topic": topic,
        "message": { "id": id, "payload": payload },
    })
}

#[track_caller]
fn assert_ack(frame: &Value, topic: &str, label: &str) {
    assert_eq!(
        (&frame["type"], &frame["topic"], &frame["status"]),
        (&json!("ack"), &json!(topic), &json!("ok")),
        "{label}: expected an ack: {frame}"
    );
}

/// Lets late frames arrive, then asserts no subscriber has any: no event is
/// delivered twice, not even by another node's delayed copy.
pub async fn assert_nothing_more(subscribers: &mut [Client]) {
    tokio::time::sleep(SETTLE_TIME).await;
    futures_util::future::join_all(subscribers.iter_mut().map(Client::assert_nothing_pending))
        .await;
}

/// Waits concurrently until every subscriber has `count` more events.
pub async fn expect_events_everywhere(subscribers: &mut [Client], topic: &str, count: usize) {
    futures_util::future::join_all(
        subscribers
            .iter_mut()
            .map(|subscriber| subscriber.expect_events(topic, count)),
    )
    .await;
}

/// Publishes over REST, as one sequential publisher.
pub struct RestPublisher {
    pub label: String,
    endpoint: Endpoint,
    published: u64,
}

impl RestPublisher {
    /// `name` (e.g. "rest1") labels it in payloads and failures.
    pub fn new(endpoint: &Endpoint, name: &str) -> Self {
        Self {
            label: format!("{name}@{}", endpoint.label),
            endpoint: endpoint.clone(),
            published: 0,
        }
    }

    /// `POST /topics/{topic}/messages`: the ack, or status and body.
    pub async fn publish(&mut self, topic: &str) -> Result<Acked, (u16, Value)> {
        let (id, payload) = next_message(&self.label, &mut self.published);
        self.send_message(topic, id, payload).await
    }

    /// Publishes a fresh payload under a message id of the caller's.
    pub async fn publish_with_id(&mut self, topic: &str, id: &str) -> Result<Acked, (u16, Value)> {
        let (_, payload) = next_message(&self.label, &mut self.published);
        self.send_message(topic, id.to_owned(), payload).await
    }

    /// Publishes `earlier`'s message again: same id, same payload.
    pub async fn republish(&mut self, topic: &str, earlier: &Acked) -> Result<Acked, (u16, Value)> {
        let (id, payload) = (earlier.id.clone(), earlier.payload.clone());
        self.send_message(topic, id, payload).await
    }

    async fn send_message(
        &mut self,
        topic: &str,
        id: String,
        payload: Value,
    ) -> Result<Acked, (u16, Value)> {
        let path = format!("/topics/{topic}/messages");
        let body = json!({ "id": id, "payload": payload });
        let (status, reply) = self.endpoint.post_json(&path, &body).await;
        if status != 200 {
            return Err((status, reply));
        }
        assert_eq!(
            (&reply["status"], &reply["topic"]),
            (&json!("published"), &json!(topic)),
            "{}: {reply}",
            self.label
        );
        let seq = reply["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: reply without seq: {reply}", self.label));
        Ok(Acked {
            publisher: self.label.clone(),
            id,
            payload,
            seq: Some(seq),
            duplicate: reply["duplicate"] == true,
        })
    }
}

/// A WebSocket publisher in a task of its own, as a real client would be,
/// publishing one event after another (each until acknowledged, see
/// `Client::publish_until_acked`) until stopped.
pub struct PublisherTask {
    acked: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<PublisherLog>,
}

/// What a `PublisherTask` published.
#[derive(Debug)]
pub struct PublisherLog {
    /// In publish order.
    pub acked: Vec<Acked>,
    /// When each refused attempt was answered.
    pub refused_at: Vec<Instant>,
}

impl PublisherTask {
    pub async fn start(endpoint: &Endpoint, name: &str, topic: &str) -> Self {
        let mut client = Client::connect(endpoint, name).await;
        let (acked_count, acked) = watch::channel(0);
        let (stop, mut stopped) = watch::channel(false);
        let topic = topic.to_owned();
        let task = tokio::spawn(async move {
            let mut log = PublisherLog {
                acked: Vec::new(),
                refused_at: Vec::new(),
            };
            while !*stopped.borrow_and_update() {
                let (acked, refused_at) = client.publish_until_acked(&topic).await;
                log.acked.push(acked);
                log.refused_at.extend(refused_at);
                acked_count.send_replace(log.acked.len());
            }
            log
        });
        Self { acked, stop, task }
    }

    /// Waits until `count` more publishes than so far are acknowledged.
    pub async fn await_more_acks(&mut self, count: usize) {
        let target = *self.acked.borrow() + count;
        let reached = self.acked.wait_for(|acked| *acked >= target);
        let outcome = tokio::time::timeout(ACKS_DEADLINE, reached)
            .await
            .map(|waited| waited.is_ok());
        match outcome {
            Ok(true) => {}
            Ok(false) => panic!("the publisher task ended: {:?}", (&mut self.task).await),
            Err(_) => {
                let acked = *self.acked.borrow();
                panic!("{acked} acks after {ACKS_DEADLINE:?}, waiting for {target}")
            }
        }
    }

    /// Stops after the publish under way: everything it published.
    pub async fn stop(self) -> PublisherLog {
        self.stop.send_replace(true);
        self.task.await.expect("the publisher task failed")
    }
}

/// Connects `per_endpoint` subscribers of `topic` to each endpoint, asserting
/// each subscription's ack and an empty replay.
pub async fn subscribe_on<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    topic: &str,
    per_endpoint: usize,
) -> Vec<Client> {
    let mut subscribers = Vec::new();
    for endpoint in endpoints {
        for i in 1..=per_endpoint {
            let mut subscriber = Client::connect(endpoint, &format!("sub{i}")).await;
            let replayed = subscriber.subscribe(topic, 0).await;
            assert!(replayed.is_empty(), "last_n 0 replayed {replayed:?}");
            subscribers.push(subscriber);
        }
    }
    subscribers
}

/// The last `last_n` events of `topic` as a new subscriber on `endpoint`
/// gets them replayed.
pub async fn replay_on(endpoint: &Endpoint, topic: &str, last_n: u64) -> Vec<Event> {
    Client::connect(endpoint, "replay")
        .await
        .subscribe(topic, last_n)
        .await
}

/// How much each endpoint publishes in `publish_from`.
#[derive(Clone, Copy)]
pub struct Load {
    /// Bursts of pipelined WebSocket publishes, one connection per endpoint.
    pub ws_bursts: usize,
    pub burst_len: usize,
    /// Sequential REST publishes, one publisher per endpoint.
    pub rest: usize,
}

/// Publishes `load` to `topic` from every endpoint at once, over WebSocket
/// and REST concurrently; returns every acknowledged publish.
pub async fn publish_from<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    topic: &str,
    load: Load,
) -> Vec<Acked> {
    let mut tasks = Vec::new();
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        let (ws_endpoint, ws_topic) = (endpoint.clone(), topic.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut publisher = Client::connect(&ws_endpoint, &format!("pub{i}")).await;
            let mut acked = Vec::new();
            for _ in 0..load.ws_bursts {
                acked.extend(publisher.publish_burst(&ws_topic, load.burst_len).await);
            }
            acked
        }));
        let mut publisher = RestPublisher::new(endpoint, &format!("rest{i}"));
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for _ in 0..load.rest {
                let publish = publisher.publish(&topic).await;
                acked.push(publish.unwrap_or_else(|reply| {
                    panic!("{}: publish refused: {reply:?}", publisher.label)
                }));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in futures_util::future::join_all(tasks).await {
        acked.extend(task.expect("a publisher failed"));
    }
    acked
}

// ----------------------------------------------------------- assertions --

/// The delivery guarantees, over what each subscriber received: the
/// acknowledged events exactly once each, nothing else, every subscriber the
/// identical sequence (id, seq, ts, payload), seq strictly increasing, each
/// publisher's events in its publish order, and each REST reply's seq the
/// event's.
pub fn assert_same_stream<'a>(subscribers: impl IntoIterator<Item = &'a Client>, acked: &[Acked]) {
    let subscribers: Vec<&Client> = subscribers.into_iter().collect();
    let (first, others) = subscribers.split_first().expect("at least one subscriber");
    let stream = &first.received;
    assert_exactly_once(&first.label, stream, acked);
    for pair in stream.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "{}: seq not strictly increasing: {:?} then {:?}",
            first.label,
            pair[0],
            pair[1]
        );
    }
    for other in others {
        if let Some(difference) = first_difference(stream, &other.received) {
            panic!(
                "{} (left) and {} (right) saw different streams: {difference}",
                first.label, other.label
            );
        }
    }
    let position: HashMap<&str, usize> = stream
        .iter()
        .enumerate()
        .map(|(i, event)| (event.id.as_str(), i))
        .collect();
    let mut last_of_publisher: HashMap<&str, usize> = HashMap::new();
    for publish in acked {
        let at = position[publish.id.as_str()];
        let event = &stream[at];
        assert_eq!(event.payload, publish.payload, "payload of {publish:?}");
        if let Some(seq) = publish.seq {
            assert_eq!(event.seq, seq, "REST reply seq vs event seq of {publish:?}");
        }
        if let Some(previous) = last_of_publisher.insert(&publish.publisher, at) {
            assert!(
                previous < at,
                "{}'s events out of publish order: {:?} delivered after {:?}",
                publish.publisher,
                event,
                stream[previous]
            );
        }
    }
}

/// Asserts `stream` holds each acknowledged id exactly once and nothing else.
fn assert_exactly_once(label: &str, stream: &[Event], acked: &[Acked]) {
    let mut seen = HashSet::new();
    let duplicates: Vec<&Event> = stream
        .iter()
        .filter(|event| !seen.insert(event.id.as_str()))
        .collect();
    assert!(
        duplicates.is_empty(),
        "{label}: received twice: {duplicates:?}"
    );
    let expected: HashSet<&str> = acked.iter().map(|publish| publish.id.as_str()).collect();
    let missing: Vec<&Acked> = acked
        .iter()
        .filter(|publish| !seen.contains(publish.id.as_str()))
        .collect();
    let unexpected: Vec<&Event> = stream
        .iter()
        .filter(|event| !expected.contains(event.id.as_str()))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{label}: {} of {} acknowledged events missing: {missing:?}; \
         {} never acknowledged: {unexpected:?}",
        missing.len(),
        acked.len(),
        unexpected.len()
    );
}

/// Asserts `frame` is an `error` with `code` and a non-empty message.
#[track_caller]
pub fn assert_error_frame(frame: &Value, code: &str, context: &str) {
    assert_eq!(frame["type"], "error", "{context}: {frame}");
    assert_eq!(frame["error"]["code"], code, "{context}: {frame}");
    let message = frame["error"]["message"].as_str();
    assert!(
        message.is_some_and(|message| !message.is_empty()),
        "{context}: error without a message: {frame}"
    );
}

/// Asserts two event lists are identical.
#[track_caller]
pub fn assert_events_eq(context: &str, actual: &[Event], expected: &[Event]) {
    if let Some(difference) = first_difference(actual, expected) {
        panic!("{context}: got (left) vs expected (right): {difference}");
    }
}

/// Where two event lists first differ: both events in full, and the
/// (seq, id) lists around that position.
fn first_difference(left: &[Event], right: &[Event]) -> Option<String> {
    let at = (0..left.len().max(right.len())).find(|&i| left.get(i) != right.get(i))?;
    let around = |events: &[Event]| {
        let from = at.saturating_sub(3).min(events.len());
        let to = (at + 4).min(events.len());
        format!(
            "[{from}..{to}] of {}: {:?}",
            events.len(),
            summary(&events[from..to])
        )
    };
    Some(format!(
        "first difference at position {at}:\n  left  {:?}\n  right {:?}\n  left  {}\n  right {}",
        left.get(at),
        right.get(at),
        around(left),
        around(right)
    ))
}

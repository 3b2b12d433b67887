//! `ringcast-load run --target nats --jetstream` against a real nats-server
//! with JetStream and WebSocket on: the stream is made, every publish is
//! answered by a PubAck, and the ingress rate counts them. Skipped without
//! nats-server unless `RINGCAST_CLUSTER_TESTS=require` (CI), which fails.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct NatsServer {
    child: Child,
    dir: PathBuf,
    ws_port: u16,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

fn nats_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var("RINGCAST_CLUSTER_TESTS").as_deref() != Ok("require"),
            "nats-server not installed and RINGCAST_CLUSTER_TESTS=require"
        );
        eprintln!("SKIPPED: nats-server not installed (apt-get install -y nats-server)");
    }
    found
}

fn start_nats_with_jetstream(binary: &Path) -> NatsServer {
    let dir = std::env::temp_dir().join(format!("ringcast-load-js-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, ws_port) = (free_port(), free_port());
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\n\
             websocket {{ listen: \"127.0.0.1:{ws_port}\", no_tls: true }}\n\
             jetstream {{ store_dir: \"{}\" }}\n",
            dir.join("store").display()
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stderr(std::fs::File::create(dir.join("nats.log")).unwrap())
        .spawn()
        .expect("starting nats-server");
    let server = NatsServer {
        child,
        dir,
        ws_port,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", ws_port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[test]
fn jetstream_ingress_counts_pub_acks_for_every_publish() {
    let Some(binary) = nats_server_binary() else {
        return;
    };
    let server = start_nats_with_jetstream(&binary);
    let json = server.dir.join("result.json");
    let status = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args([
            "run",
            "--target",
            "nats",
            "--scenario",
            "ingress",
            "--jetstream",
        ])
        .args(["--topics", "10", "--publishers", "2"])
        .args(["--duration", "1s", "--warmup", "300ms", "--workers", "1"])
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{}", server.ws_port))
        .arg("--json")
        .arg(&json)
        .status()
        .expect("running ringcast-load");
    assert!(status.success(), "ringcast-load failed: {status}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["jetstream"], true);
    let step = &report["steps"][0];
    assert!(step["published"].as_u64().unwrap() > 0, "{step}");
    assert_eq!(step["publish_errors"], 0, "{step}");
    // Every publish was stored: each got its PubAck before the drain ended.
    assert_eq!(step["unanswered_publishes"], 0, "{step}");
    assert!(step["delivered_per_sec"].as_f64().unwrap() > 0.0, "{step}");
    assert_eq!(step["loss"], 0, "{step}");
    assert_eq!(report["first_problem"], serde_json::Value::Null, "{report}");
}

#[test]
fn jetstream_is_refused_for_ringcast() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args([
            "run",
            "--target",
            "ringcast",
            "--scenario",
            "ingress",
            "--jetstream",
        ])
        .output()
        .expect("running ringcast-load");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--jetstream is for nats"), "{stderr}");
}

//! Redis over TLS, as Azure Cache for Redis serves it (`rediss://`), end
//! to end: a private CA and a server certificate made here with `openssl`,
//! Debian's `redis-server` serving TLS only, a real `dronedelivery` process
//! on `rediss://` with `--redis-tls-ca-file` taking a delivery to
//! Completed (queue and stores on the TLS server), and the same process
//! refusing, with a clear error, a server whose certificate another CA
//! signed. Needs `openssl` and `redis-server` (`scripts/services.sh`).

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (install it: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}-ca.pem`) and, when `server` is set, a certificate for
/// 127.0.0.1 it signed (`server.pem`, `server.key`).
fn make_ca(dir: &Path, name: &str, server: bool) -> PathBuf {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    openssl(dir, &["genrsa", "-out", &ca_key, "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-days",
            "2",
            "-subj",
            &format!("/CN=dronedelivery test CA {name}"),
            "-out",
            &ca,
        ],
    );
    if server {
        std::fs::write(
            dir.join("san.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(dir, &["genrsa", "-out", "server.key", "2048"]);
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                "server.key",
                "-subj",
                "/CN=localhost",
                "-out",
                "server.csr",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.cnf",
                "-out",
                "server.pem",
            ],
        );
    }
    dir.join(ca)
}

/// `redis-server` on a TLS port only; killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(dir: &Path, ca: &Path) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("server.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install it: apt-get install redis-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn engine(url: &str, ca: &Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dronedelivery"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--queue", "redis-streams", "--redis-url", url])
        .arg("--redis-tls-ca-file")
        .arg(ca)
        .args([
            "--sim-speed",
            "2000",
            "--tick-ms",
            "20",
            "--fleet-size",
            "4",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

#[tokio::test]
async fn a_delivery_completes_on_redis_over_tls_and_a_foreign_ca_is_refused() {
    let dir = std::env::temp_dir().join(format!("dd-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = make_ca(&dir, "good", true);
    let redis = TlsRedis::start(&dir, &ca);
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);

    // The engine on rediss:// with the private CA: a delivery to Completed.
    let port = free_port();
    let mut child = engine(&url, &ca, port)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dronedelivery");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the engine exited on rediss://: {status}");
        }
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = json!({
        "confirmationRequired": "None", "deadline": "", "dropOffLocation": "drop off",
        "expedited": true, "ownerId": "tls-owner",
        "packageInfo": {"packageId": "tls-package", "size": "Small", "tag": "t", "weight": 1},
        "pickupLocation": "my pickup", "pickupTime": "2019-05-08T20:00:00.000Z"
    });
    let accepted: Value = client
        .post(format!("{base}/api/deliveryrequests"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["deliveryId"]
        .as_str()
        .expect("deliveryId")
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = client
            .get(format!("{base}/api/deliveries/{id}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if status["stageName"] == "Completed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not completed on rediss://: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();

    // Another CA: the server's certificate is refused, at start-up, saying so.
    let other = make_ca(&dir, "other", false);
    let out = engine(&url, &other, free_port())
        .stderr(Stdio::piped())
        .output()
        .expect("run dronedelivery");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a foreign CA must be refused: {stderr}"
    );
    assert!(
        stderr.contains("could not connect to Redis")
            || stderr.contains("could not open the Redis stream"),
        "{stderr}"
    );
    assert!(
        stderr.to_ascii_lowercase().contains("certificate"),
        "the error names the certificate problem: {stderr}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

//! Slow and idle clients (slowloris and its variants) against the real
//! server socket: they are cut off by the HTTP server's header and body
//! timeouts, and while they hold connections other clients are still served.
//! Oversized bodies (413) are covered by
//! `operations.rs::a_two_megabyte_body_is_refused_with_413` and the property
//! test in `hostile.rs`.

use std::time::{Duration, Instant};

use dronedelivery_gateway::middleware::REQUEST_TIMEOUT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ri_example, spawn_app_with, TestApp};

/// Connections trickling their headers at once.
const SLOW_CLIENTS: usize = 200;
/// Connections that never send a byte.
const SILENT_CLIENTS: usize = 20;
/// Upper bound on how long the server may take to close a slow connection:
/// far above the timeouts configured here, so a busy machine cannot fail
/// the tests.
const GENEROUS: Duration = Duration::from_secs(30);

/// A request line and headers that a slowloris client sends one byte at a
/// time and never finishes: after the prefix, the header value goes on
/// forever.
const SLOWLORIS: &[u8] =
    b"GET /api/deliveries/x/status HTTP/1.1\r\nHost: dronedelivery\r\nX-Slow: ";

/// How a connection held by the test ended.
struct Ended {
    /// The server closed it (end of stream or reset) within [`GENEROUS`]
    /// (or the bound given to [`hold`]).
    closed: bool,
    /// Time from the start of [`hold`] to the close.
    after: Duration,
    /// Everything the server sent.
    response: Vec<u8>,
}

impl Ended {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.response).into_owned()
    }
}

fn address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

async fn open(address: &str) -> TcpStream {
    TcpStream::connect(address)
        .await
        .expect("connect to the test server")
}

/// A client without a connection pool: the tests close idle connections
/// quickly, and a pooled one could be reused just as the server closes it.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(GENEROUS)
        .build()
        .unwrap()
}

/// Sends `drip` on `stream` one byte every `every`, never closing its side,
/// until the server closes the connection or `within` has passed. Returns
/// at once; the task reports what the server sent.
fn hold(
    stream: TcpStream,
    drip: impl Iterator<Item = u8> + Send + 'static,
    every: Duration,
    within: Duration,
) -> tokio::task::JoinHandle<Ended> {
    let start = Instant::now();
    tokio::spawn(async move {
        let (mut reader, mut writer) = stream.into_split();
        let trickle = async move {
            for byte in drip {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(every).await;
            }
            // Keep the write half: dropping it would send FIN, and a client
            // that hangs up is not slow.
            std::future::pending::<()>().await;
            drop(writer);
        };
        let mut response = Vec::new();
        let read = async {
            let mut buf = [0_u8; 4096];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                }
            }
        };
        let closed = tokio::select! {
            () = read => true,
            () = trickle => false,
            () = tokio::time::sleep(within) => false,
        };
        Ended {
            closed,
            after: start.elapsed(),
            response,
        }
    })
}

async fn ended(held: Vec<tokio::task::JoinHandle<Ended>>) -> Vec<Ended> {
    let mut out = Vec::with_capacity(held.len());
    for h in held {
        out.push(h.await.expect("held connection task"));
    }
    out
}

/// Normal traffic: a probe, a delivery request and a read of it. Returns
/// the number of requests served.
async fn normal_traffic(app: &TestApp, client: &reqwest::Client) -> usize {
    let res = client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(res.status(), 200, "GET /healthz");
    let res = client
        .post(app.url("/api/deliveryrequests"))
        .json(&ri_example())
        .send()
        .await
        .expect("POST /api/deliveryrequests");
    assert_eq!(res.status(), 202, "POST /api/deliveryrequests");
    let res = client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(res.status(), 200, "GET /readyz");
    3
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_do_not_starve_other_clients() {
    let header_timeout = Duration::from_secs(3);
    let app = spawn_app_with(|a| a.http_header_timeout_secs = header_timeout.as_secs()).await;
    let address = address(&app);
    let mut held = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        let drip = SLOWLORIS.iter().copied().chain(std::iter::repeat(b'a'));
        held.push(hold(
            open(&address).await,
            drip,
            Duration::from_millis(500),
            GENEROUS,
        ));
    }
    for _ in 0..SILENT_CLIENTS {
        held.push(hold(
            open(&address).await,
            std::iter::empty::<u8>(),
            Duration::ZERO,
            GENEROUS,
        ));
    }
    // A keep-alive connection answered once, then left idle.
    let mut keep_alive = open(&address).await;
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: dronedelivery\r\n\r\n")
        .await
        .unwrap();
    let idle = hold(
        keep_alive,
        std::iter::empty::<u8>(),
        Duration::ZERO,
        GENEROUS,
    );

    // Other clients are served while every slow connection is open.
    let client = fresh_client();
    let mut served = normal_traffic(&app, &client).await;
    let open_meanwhile = held.iter().filter(|h| !h.is_finished()).count();
    assert_eq!(
        open_meanwhile,
        SLOW_CLIENTS + SILENT_CLIENTS,
        "the slow connections should still have been open while other clients were served \
         (header timeout {header_timeout:?})"
    );

    // The server closes them all once the header timeout has passed.
    let ends = ended(held).await;
    let closed = ends.iter().filter(|e| e.closed).count();
    let slowest = ends.iter().map(|e| e.after).max().unwrap_or_default();
    for e in &ends {
        assert!(
            e.closed,
            "a slow connection was still open after {:?}",
            e.after
        );
        // hyper closes a connection whose head timed out without an answer;
        // if anything is ever sent, it must be an error status.
        assert!(
            e.response.is_empty() || e.text().starts_with("HTTP/1.1 4"),
            "unexpected answer to a slow client: {}",
            e.text()
        );
    }
    let idle = idle.await.unwrap();
    assert!(
        idle.closed,
        "an idle keep-alive connection was not closed: {}",
        idle.text()
    );
    assert!(idle.text().starts_with("HTTP/1.1 200"), "{}", idle.text());

    // And the server is still fine.
    served += normal_traffic(&app, &client).await;
    println!(
        "slow clients: opened {} (slowloris {SLOW_CLIENTS}, silent {SILENT_CLIENTS}, idle keep-alive 1), \
         closed by the server {} (slowest after {slowest:?}, header timeout {header_timeout:?}), \
         normal requests served {served} (with {open_meanwhile} slow connections open)",
        SLOW_CLIENTS + SILENT_CLIENTS + 1,
        closed + usize::from(idle.closed),
    );
    app.stop().await;
}

#[tokio::test]
async fn beyond_max_connections_a_client_waits_for_a_free_slot() {
    const MAX: u32 = 5;
    let app = spawn_app_with(|a| {
        a.max_connections = MAX;
        a.http_header_timeout_secs = 2;
    })
    .await;
    let address = address(&app);
    let silent: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..MAX {
            v.push(hold(
                open(&address).await,
                std::iter::empty::<u8>(),
                Duration::ZERO,
                GENEROUS,
            ));
        }
        v
    };
    // The kernel completes the connection, but the server does not take it
    // while every slot is held...
    let mut waiting = open(&address).await;
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: dronedelivery\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0_u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut first)).await;
    assert!(
        early.is_err(),
        "a connection beyond --max-connections was served at once: {early:?}"
    );
    // ...and serves it once the silent connections time out.
    let mut answer = Vec::new();
    tokio::time::timeout(GENEROUS, waiting.read_to_end(&mut answer))
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let ends = ended(silent).await;
    assert!(ends.iter().all(|e| e.closed));
    println!(
        "connection limit: {MAX} silent connections held every slot; the next client was served after they were closed"
    );
    app.stop().await;
}

/// Headers of a delivery request announcing a 1,000-byte body.
const POST_HEAD: &[u8] = b"POST /api/deliveryrequests HTTP/1.1\r\nHost: dronedelivery\r\n\
Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_the_server_stays_ready() {
    let app = spawn_app_with(|a| a.http_body_timeout_secs = 1).await;
    let address = address(&app);
    let mut stream = open(&address).await;
    stream.write_all(POST_HEAD).await.unwrap();
    // A few bytes of the body, then nothing.
    let drip = br#"{"ownerId": "slow"#.iter().copied();
    let end = hold(stream, drip, Duration::from_millis(100), GENEROUS)
        .await
        .unwrap();
    assert!(end.closed, "the connection was not closed: {}", end.text());
    let text = end.text();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{text}"
    );
    assert!(lower.contains("connection: close"), "{text}");
    assert!(text.contains(r#""status":408"#), "{text}");

    let served = normal_traffic(&app, &fresh_client()).await;
    println!(
        "stalled body: answered 408 and closed after {:?}; normal requests served afterwards {served}",
        end.after
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_keeps_trickling_is_cut_at_the_request_timeout() {
    // One byte every 500 ms never pauses long enough for the body timeout;
    // the limit on the whole request (30 s) ends it.
    let app = spawn_app_with(|_| {}).await;
    let address = address(&app);
    let mut stream = open(&address).await;
    stream.write_all(POST_HEAD).await.unwrap();
    let drip = br#"{"ownerId": ""#.iter().copied().chain(std::iter::repeat(b'a'));
    let bound = REQUEST_TIMEOUT + GENEROUS;
    let end = hold(stream, drip, Duration::from_millis(500), bound)
        .await
        .unwrap();
    assert!(
        end.closed,
        "a trickling body was still being read after {bound:?}"
    );
    // The 408 is sent, but the client is still writing when the server
    // closes, so its kernel may discard the answer on the reset.
    let text = end.text();
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let served = normal_traffic(&app, &fresh_client()).await;
    println!(
        "trickling body: connection closed after {:?} ({}); normal requests served afterwards {served}",
        end.after,
        if text.is_empty() {
            "reset before the answer was read"
        } else {
            "408"
        }
    );
    app.stop().await;
}

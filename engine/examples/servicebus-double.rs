//! The local double of the Azure Service Bus REST API as its own process,
//! so the whole engine can run against it (Azure is not always reachable,
//! and Microsoft's emulator speaks only AMQP):
//!
//! ```text
//! cargo run -p dronedelivery-engine --example servicebus-double -- --listen 127.0.0.1:7380
//! ```
//!
//! It prints the endpoint and, for each shared access policy (the
//! namespace's Manage policy and the least-privilege ones), the settings an
//! engine takes. Queues exist as soon as they are used; `--partitions N`
//! on the engine uses `QUEUE` and `QUEUE-1` … `QUEUE-{N-1}`. The double
//! keeps the service's semantics (peek-lock, lock expiry, delivery counts,
//! `MaxDeliveryCount`, time to live, the `$DeadLetterQueue` subqueue,
//! rights per key) and keeps everything in memory: stopping it loses the
//! messages.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dronedelivery_engine::adapters::servicebus::double::{serve_double, DoubleConfig};

/// Serves the Service Bus double until Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "servicebus-double", about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7380")]
    listen: SocketAddr,
    /// Queues' lock duration, in seconds.
    #[arg(long, default_value_t = 60)]
    lock_duration_secs: u64,
    /// Queues' MaxDeliveryCount: past it the double dead-letters a message.
    #[arg(long, default_value_t = 10)]
    max_delivery_count: u32,
    /// Queues' default message time to live, in seconds (default: forever).
    #[arg(long)]
    default_ttl_secs: Option<u64>,
    /// Dead-letter expired messages (else they are dropped).
    #[arg(long)]
    dead_letter_on_expiration: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let cfg = DoubleConfig {
        default_time_to_live: args.default_ttl_secs.map(Duration::from_secs),
        dead_lettering_on_message_expiration: args.dead_letter_on_expiration,
        ..DoubleConfig::new(
            Duration::from_secs(args.lock_duration_secs.max(1)),
            args.max_delivery_count.max(1),
        )
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let (addr, double) = serve_double(cfg, listener)?;
    println!("Service Bus double listening on http://{addr}");
    println!();
    println!("Point an engine at it with --queue servicebus and:");
    println!("  DD_SERVICEBUS_ENDPOINT=http://{addr}");
    println!("  DD_SERVICEBUS_QUEUE=deliveries   (any name; created on first use)");
    println!();
    for policy in double.policies() {
        println!("# {} ({})", policy.name, policy.rights.describe());
        println!(
            "  DD_SERVICEBUS_CONNECTION_STRING='{}'",
            double.connection_string(policy)
        );
    }
    // For scripts: the line above is printed before this one.
    println!();
    println!("ready");
    shutdown_signal().await;
    double.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

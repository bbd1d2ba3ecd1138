//! `dronedelivery admin …`: the operator CLI. It calls the same admin API
//! as any other client (`/admin/...` with the bearer token) and prints the
//! JSON answer, so what operators script against is what the CLI shows.

use std::process::ExitCode;

use crate::config::{AdminAction, AdminArgs};

/// Runs one admin command; exit code 0 on a 2xx answer.
pub async fn run(args: AdminArgs) -> ExitCode {
    match call(&args).await {
        Ok((status, body)) => {
            println!("{body}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("HTTP {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn call(args: &AdminArgs) -> Result<(reqwest::StatusCode, String), reqwest::Error> {
    let base = args.url.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = match &args.action {
        AdminAction::Cluster => client.get(format!("{base}/admin/cluster")),
        AdminAction::Supervisors => client.get(format!("{base}/admin/supervisors")),
        AdminAction::Restart { name } => {
            client.post(format!("{base}/admin/supervisors/{}/restart", encode(name)))
        }
        AdminAction::Deadletters { offset, limit } => client
            .get(format!("{base}/admin/deadletters"))
            .query(&[("offset", offset), ("limit", limit)]),
        AdminAction::Replay { id } => {
            client.post(format!("{base}/admin/deadletters/{}/replay", encode(id)))
        }
    };
    let request = match &args.token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    };
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    // Pretty-print JSON answers; anything else as it came.
    let body = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    Ok((status, body))
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

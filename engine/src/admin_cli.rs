//! `dronedelivery admin …`: the operator CLI. It calls the same admin API
//! as any other client (`/admin/...` with the bearer token) and prints the
//! JSON answer, so what operators script against is what the CLI shows.
//!
//! Any engine is a window onto all of them: `--engine ID` sends a command
//! to another engine through the one at `--url` (the gateway, typically).
//! `restart NAME --engine all` is a rolling restart driven from here, one
//! engine at a time, each once the previous one is ready again, with a
//! progress line per engine on stderr and the outcomes as JSON on stdout;
//! it stops at the first failure.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{AdminAction, AdminArgs};

/// How long a rolling restart waits for an engine to be ready again.
const READY_AGAIN: Duration = Duration::from_secs(60);

/// Runs one admin command; exit code 0 on a 2xx answer.
pub async fn run(args: AdminArgs) -> ExitCode {
    let admin = Admin::new(&args);
    let outcome = match &args.action {
        AdminAction::Restart { name, engine }
            if engine
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case("all")) =>
        {
            admin.rolling_restart(name).await
        }
        _ => admin.once(&args.action).await,
    };
    match outcome {
        Ok((ok, body)) => {
            println!("{}", pretty(&body));
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

struct Admin<'a> {
    base: &'a str,
    token: Option<&'a str>,
    client: reqwest::Client,
}

impl<'a> Admin<'a> {
    fn new(args: &'a AdminArgs) -> Self {
        Self {
            base: args.url.trim_end_matches('/'),
            token: args.token.as_ref().map(|t| t.expose()),
            client: reqwest::Client::new(),
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends one request; `(2xx, body)`, with the status on stderr when it
    /// is not a success.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(bool, String), String> {
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            eprintln!("HTTP {status}");
        }
        Ok((status.is_success(), text))
    }

    async fn once(&self, action: &AdminAction) -> Result<(bool, String), String> {
        let base = self.base;
        let c = &self.client;
        let with_engine = |r: reqwest::RequestBuilder, engine: &Option<String>| match engine {
            Some(e) => r.query(&[("engine", e)]),
            None => r,
        };
        let request = match action {
            AdminAction::Cluster => c.get(format!("{base}/admin/cluster")),
            AdminAction::Supervisors { engine } => {
                with_engine(c.get(format!("{base}/admin/supervisors")), engine)
            }
            AdminAction::Restart { name, engine } => with_engine(
                c.post(format!("{base}/admin/supervisors/{}/restart", encode(name))),
                engine,
            ),
            AdminAction::Deadletters { offset, limit } => c
                .get(format!("{base}/admin/deadletters"))
                .query(&[("offset", offset), ("limit", limit)]),
            AdminAction::Replay { id } => {
                c.post(format!("{base}/admin/deadletters/{}/replay", encode(id)))
            }
        };
        self.send(request).await
    }

    /// The live members' cards.
    async fn members(&self) -> Result<Vec<Value>, String> {
        let (ok, body) = self
            .send(self.client.get(format!("{}/admin/cluster", self.base)))
            .await?;
        if !ok {
            return Err(format!("cannot list the cluster: {body}"));
        }
        let view: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(view["members"].as_array().cloned().unwrap_or_default())
    }

    /// Restarts `name` on every engine that runs actors, one at a time.
    async fn rolling_restart(&self, name: &str) -> Result<(bool, String), String> {
        let targets: Vec<String> = self
            .members()
            .await?
            .iter()
            .filter(|m| m["role"] != "gateway")
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        let total = targets.len();
        let mut outcomes = Vec::new();
        let mut failed = false;
        for (n, engine) in targets.into_iter().enumerate() {
            let step = format!("[{}/{total}] {engine}", n + 1);
            if failed {
                eprintln!("{step}: skipped");
                outcomes.push(json!({"engine": engine, "outcome": "skipped"}));
                continue;
            }
            let since = chrono::Utc::now();
            let (ok, body) = self
                .send(
                    self.client
                        .post(format!(
                            "{}/admin/supervisors/{}/restart",
                            self.base,
                            encode(name)
                        ))
                        .query(&[("engine", &engine)]),
                )
                .await?;
            let answer = serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body));
            if !ok {
                eprintln!("{step}: restart failed: {}", answer["detail"]);
                outcomes.push(json!({"engine": engine, "outcome": "failed", "error": answer}));
                failed = true;
                continue;
            }
            eprintln!(
                "{step}: {name} restarted ({}, {} restarts); waiting for it to be ready",
                answer["status"], answer["restarts"]
            );
            match self.ready_again(&engine, since).await {
                Ok(()) => {
                    eprintln!("{step}: ready");
                    outcomes.push(
                        json!({"engine": engine, "outcome": "restarted", "supervisor": answer}),
                    );
                }
                Err(e) => {
                    eprintln!("{step}: not ready again: {e}");
                    outcomes.push(json!({"engine": engine, "outcome": "failed", "error": e}));
                    failed = true;
                }
            }
        }
        let body = json!({"supervisor": name, "engines": outcomes}).to_string();
        Ok((!failed, body))
    }

    /// Waits until `engine`'s card, refreshed after `since`, says ready.
    async fn ready_again(
        &self,
        engine: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_AGAIN;
        let mut last = "no card refreshed since the restart".to_owned();
        loop {
            let members = self.members().await?;
            if let Some(card) = members.iter().find(|m| m["id"] == engine) {
                let seen = card["seenAt"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                if seen.is_some_and(|s| s > since) {
                    if card["ready"] == true {
                        return Ok(());
                    }
                    last = card["notReady"].as_str().unwrap_or("not ready").to_owned();
                }
            } else {
                last = "it left the cluster".into();
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("after {READY_AGAIN:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
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

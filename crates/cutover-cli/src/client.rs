//! Talking to the controller's HTTP API: where it is, the token, requests, and following
//! a rollout's server-sent events.
//!
//! The controller's address comes from `--controller`, then `CUTOVER_CONTROLLER`, then
//! the `controller` key of the config file, then `http://127.0.0.1:9900`; `https://`
//! addresses are checked against the system's CA bundle, or only the CA certificates of
//! `--ca-file`, else `CUTOVER_CA_FILE`, else the config file's `caFile`. The token from
//! `--token-file`, then `CUTOVER_TOKEN` (the token itself), then `CUTOVER_TOKEN_FILE`,
//! then the config file's `tokenFile`, then `.cutover/token` (what `cutover serve`
//! writes in its default state directory); an empty or whitespace-only token is refused.
//! The config file is `--config`, else `CUTOVER_CONFIG`, else
//! `$XDG_CONFIG_HOME/cutover/config.toml` (or `~/.config/cutover/config.toml`).

pub use cutover_core::error_chain;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use cutover_metrics::https::{Connector, HttpsClient};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// How long one API request may take. Starting a release may wait for its stable slot
/// to come up (up to a minute on the local backend), so this is longer than that.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Takes a streamed body's pieces as they arrive; `false` stops reading.
pub type ChunkSink<'a> = dyn FnMut(&[u8]) -> bool + 'a;

/// Where the controller is, as flags.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectionArgs {
    /// The controller's API, e.g. `http://127.0.0.1:9900` or `https://ci.example:9900`
    /// [env: CUTOVER_CONTROLLER].
    #[arg(long)]
    pub controller: Option<String>,
    /// For an `https://` controller: trust only the CA certificates in this PEM file
    /// instead of the system's bundle (a private CA) [env: CUTOVER_CA_FILE].
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// A file holding the API token [env: CUTOVER_TOKEN_FILE; or the token itself in
    /// CUTOVER_TOKEN].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The CLI's config file (TOML: `controller`, `tokenFile`) [env: CUTOVER_CONFIG].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    controller: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// Why a request did not get an answer the command can use.
#[derive(Debug)]
pub enum ClientError {
    /// The controller cannot be reached (exit 4).
    Unreachable(String),
    /// The controller answered with an error document.
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error's kind (`invalid`, `conflict`, `rejected`, `notFound`, `backend`...).
        kind: String,
        /// The message for people.
        message: String,
        /// A release file's problems, for `invalid`.
        diagnostics: Vec<serde_json::Value>,
    },
    /// Bad settings on this side (exit 2).
    Settings(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(m) | ClientError::Settings(m) => f.write_str(m),
            ClientError::Api { message, .. } => f.write_str(message),
        }
    }
}

impl ClientError {
    /// The exit code for this error: 4 when the controller or its backend cannot be
    /// reached, 2 for everything the user has to change.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable(_) => crate::exit::UNAVAILABLE,
            ClientError::Api { kind, .. } if kind == "backend" => crate::exit::UNAVAILABLE,
            ClientError::Api { status, .. } if status.is_server_error() => crate::exit::UNAVAILABLE,
            _ => crate::exit::INVALID_INPUT,
        }
    }
}

/// A connection to the controller's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    /// Where the token came from (`CUTOVER_TOKEN`, `the token file PATH`), for a refusal.
    token_from: Option<String>,
    http: HttpsClient<Full<Bytes>>,
}

impl ApiClient {
    /// Resolves the address and token from flags, environment and config file.
    pub fn from_settings(
        args: &ConnectionArgs,
        env: &BTreeMap<String, String>,
    ) -> Result<ApiClient, ClientError> {
        let config = read_config(args, env)?;
        let base = args
            .controller
            .clone()
            .or_else(|| env.get("CUTOVER_CONTROLLER").cloned())
            .or(config.controller)
            .unwrap_or_else(|| "http://127.0.0.1:9900".to_string());
        let base = if base.contains("://") {
            base
        } else {
            format!("http://{base}")
        };
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ClientError::Settings(format!(
                "the controller address '{base}' must be http:// or https://"
            )));
        }
        let (token, token_from) = match resolve_token(args, env, config.token_file)? {
            Some((token, from)) => (Some(token), Some(from)),
            None => (None, None),
        };
        let ca_file = args
            .ca_file
            .clone()
            .or_else(|| env.get("CUTOVER_CA_FILE").map(PathBuf::from))
            .or(config.ca_file);
        // The connector has a 5 s connect timeout; with a CA file, it trusts that alone.
        let connector = match &ca_file {
            Some(path) => Connector::checked_trusting(&path.to_string_lossy())
                .map_err(|reason| ClientError::Settings(format!("--ca-file: {reason}")))?,
            None => Connector::new(),
        };
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            token_from,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The controller's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::USER_AGENT, "cutover-cli");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Settings(format!("bad request to {}{path}: {e}", self.base)))
    }

    /// Sends `request` and waits for the answer's head. The controller not answering and
    /// the controller refusing become `ClientError`s that say what to do, the same way for
    /// every kind of answer (JSON, text, an event stream).
    async fn open(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!(
                    "cannot reach the controller at {}: no answer within {}s",
                    self.base,
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| self.connect_error(&error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            ClientError::Unreachable(format!(
                "the controller at {} answered {status} with something that is not cutover's API: {}",
                self.base,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        let error = &value["error"];
        let message = error["message"]
            .as_str()
            .unwrap_or("the controller refused without a message");
        Err(ClientError::Api {
            status,
            kind: error["kind"].as_str().unwrap_or("error").to_string(),
            message: self.refusal_text(status, message),
            diagnostics: error["diagnostics"].as_array().cloned().unwrap_or_default(),
        })
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<serde_json::Value, ClientError> {
        let body = self
            .open(request)
            .await?
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                ClientError::Unreachable(format!(
                    "lost the controller at {} mid-answer: {e}",
                    self.base
                ))
            })?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|_| {
            ClientError::Unreachable(format!(
                "the controller at {} answered with something that is not cutover's API: {}",
                self.base,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })
    }

    /// The controller could not be reached at all: what went wrong in a few words, and
    /// what to do about it.
    fn connect_error(&self, chain: &str) -> ClientError {
        let lower = chain.to_ascii_lowercase();
        let cause = if lower.contains("connection refused") {
            "connection refused".to_string()
        } else if lower.contains("timed out") || lower.contains("timeout") {
            "no answer to the connection (timed out)".to_string()
        } else {
            chain.to_string()
        };
        let hint = if self.base.starts_with("https://")
            && (lower.contains("tls")
                || lower.contains("certificate")
                || lower.contains("corrupt message")
                || lower.contains("invalidcontenttype"))
        {
            "; if the controller serves plain HTTP, use an http:// address, or start it with `cutover serve --tls-cert FILE --tls-key FILE` (and --ca-file here for a private CA)"
                .to_string()
        } else {
            "; start it with `cutover serve`, or point at a running one with --controller URL (or CUTOVER_CONTROLLER)"
                .to_string()
        };
        ClientError::Unreachable(format!(
            "cannot reach the controller at {}: {cause}{hint}",
            self.base
        ))
    }

    /// The controller's refusal, with where this CLI took its token from when the token is
    /// what was refused: a missing and a wrong token need different fixes.
    fn refusal_text(&self, status: StatusCode, message: &str) -> String {
        if status != StatusCode::UNAUTHORIZED {
            return message.to_string();
        }
        match &self.token_from {
            None => "no token: this command needs the controller's write token, and none was found (--token-file, CUTOVER_TOKEN, CUTOVER_TOKEN_FILE, the config file's tokenFile, .cutover/token); pass --token-file <state-dir>/token, the file `cutover serve` wrote and printed at start"
                .to_string(),
            Some(from) => format!(
                "wrong token: the token from {from} is not this controller's; use its state directory's token file (`<state-dir>/token`, printed by `cutover serve` at start) with --token-file or CUTOVER_TOKEN_FILE"
            ),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.request(Method::GET, path, Vec::new(), &[])?)
            .await
    }

    /// `POST path` with a body.
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<serde_json::Value, ClientError> {
        self.send(self.request(Method::POST, path, body, headers)?)
            .await
    }

    /// `GET path` of a plain-text answer (instance logs): the text, or the API's error.
    /// With `on_chunk`, the body is handed over piece by piece as it arrives (a followed
    /// log) until it ends or `on_chunk` returns `false`; the returned text is then empty.
    pub async fn get_text(
        &self,
        path: &str,
        mut on_chunk: Option<&mut ChunkSink<'_>>,
    ) -> Result<String, ClientError> {
        let request = self.request(Method::GET, path, Vec::new(), &[])?;
        let mut body = self.open(request).await?.into_body();
        let unreachable = |e: String| {
            ClientError::Unreachable(format!("lost the controller at {}: {e}", self.base))
        };
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreachable(error_chain(&e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            match on_chunk.as_mut() {
                Some(on_chunk) => {
                    if !on_chunk(&data) {
                        break;
                    }
                }
                None => text.extend_from_slice(&data),
            }
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Follows `GET path` as server-sent events, calling `on_status` with each `status`
    /// event's data until it returns `false` or the stream ends. Returns whether the
    /// callback asked to stop (as opposed to the stream ending).
    pub async fn follow(
        &self,
        path: &str,
        on_status: &mut dyn FnMut(serde_json::Value) -> bool,
    ) -> Result<bool, ClientError> {
        let request = self.request(Method::GET, path, Vec::new(), &[])?;
        let mut body = self.open(request).await?.into_body();
        let mut buffer = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Ok(false);
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                if let Ok(value) = serde_json::from_str(&data)
                    && !on_status(value)
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn read_config(
    args: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> Result<ConfigFile, ClientError> {
    let explicit = args
        .config
        .clone()
        .or_else(|| env.get("CUTOVER_CONFIG").map(PathBuf::from));
    let path = explicit.clone().or_else(|| {
        env.get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|dir| dir.join("cutover").join("config.toml"))
    });
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(ConfigFile::default());
        }
        Err(e) => {
            return Err(ClientError::Settings(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )));
        }
    };
    toml::from_str(&text).map_err(|e| {
        ClientError::Settings(format!(
            "the config file {} is invalid (keys: controller, tokenFile): {e}",
            path.display()
        ))
    })
}

/// A token as read from a file or the environment, trimmed; an empty one is refused, as
/// the controller refuses it.
fn non_empty(token: &str, from: &str) -> Result<String, ClientError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(ClientError::Settings(format!(
            "the token in {from} is empty; use the token `cutover serve` wrote (its state directory's `token`, or `edge-token` for a proxy)"
        )));
    }
    Ok(token.to_string())
}

/// The token and where it came from, or `None` when no source names one.
fn resolve_token(
    args: &ConnectionArgs,
    env: &BTreeMap<String, String>,
    from_config: Option<PathBuf>,
) -> Result<Option<(String, String)>, ClientError> {
    if args.token_file.is_none()
        && let Some(token) = env.get("CUTOVER_TOKEN").filter(|t| !t.is_empty())
    {
        return non_empty(token, "CUTOVER_TOKEN").map(|t| Some((t, "CUTOVER_TOKEN".into())));
    }
    let named = args
        .token_file
        .clone()
        .or_else(|| env.get("CUTOVER_TOKEN_FILE").map(PathBuf::from))
        .or(from_config);
    match named {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ClientError::Settings(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            let from = format!("the token file {}", path.display());
            non_empty(&text, &from).map(|t| Some((t, from)))
        }
        None => match std::fs::read_to_string(".cutover/token") {
            Ok(text) => {
                let from = "the token file .cutover/token".to_string();
                non_empty(&text, &from).map(|t| Some((t, from)))
            }
            Err(_) => Ok(None),
        },
    }
}

//! The API's writes: the rollout commands, a proxy's guardrail report and a submitted
//! release, each with its body read within a size and time budget.

use super::*;

/// `POST /v1/releases/NAME/VERB` for the rollout commands: the status once the rollout
/// acted on it; an abort with `?wait=S` waits (at most [`MAX_COMMAND_WAIT_SECONDS`]) for
/// the rollback to finish and answers 202 if it is still under way then.
pub(super) async fn command(
    controller: &Controller,
    name: &str,
    verb: &str,
    req: &Request<Incoming>,
) -> Response<ApiBody> {
    let command = match verb {
        "promote" if query_flag(req, "full") => Command::PromoteFull,
        "promote" => Command::Promote,
        "abort" => Command::Abort,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "retry" => Command::Retry,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "notFound",
                format!(
                    "no command '{other}': use promote, abort, pause, resume, retry, undo or delete"
                ),
            );
        }
    };
    // Only an abort ends the rollout by itself: the others leave it under way.
    let wait = query_value(req, "wait")
        .filter(|_| command == Command::Abort)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(MAX_COMMAND_WAIT_SECONDS)));
    match controller.command(name, command).await {
        Ok(status) => match wait {
            Some(limit) if !status.done => match controller.wait_done(name, limit).await {
                Ok(Some(done)) => json(StatusCode::OK, &*done),
                // Still under way: the status as it stands, `done: false`.
                Ok(None) => match controller.status(name) {
                    Ok(now) => json(StatusCode::ACCEPTED, &*now),
                    Err(e) => controller_error(&e),
                },
                Err(e) => controller_error(&e),
            },
            _ => json(StatusCode::OK, &*status),
        },
        Err(e) => controller_error(&e),
    }
}

/// Runs `work` on its own task, so that it goes to the end even if the client goes away,
/// and answers with `ok` on success, the controller's error, or a 500 naming `what` if
/// the task itself failed.
pub(super) async fn detached<T, F>(
    what: &str,
    work: F,
    ok: impl FnOnce(T) -> Response<ApiBody>,
) -> Response<ApiBody>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, ControllerError>> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(Ok(value)) => ok(value),
        Ok(Err(e)) => controller_error(&e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the {what} failed: {e}"),
        ),
    }
}

/// A request's body, at most `limit` bytes within `timeout`; else the error answer,
/// naming `what`.
pub(super) async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
    what: &str,
) -> Result<Bytes, Response<ApiBody>> {
    http_api::read_body(req.into_body(), limit, Some(timeout))
        .await
        .map_err(|e| match (e.status(), e) {
            (status, BodyError::Unreadable { source, .. }) => error(
                status,
                "badRequest",
                format!("cannot read {what} (at most {limit} bytes): {source}"),
            ),
            (status, BodyError::TimedOut { .. }) => error(
                status,
                "timeout",
                format!(
                    "{what} did not arrive within {}s; send the body at once",
                    timeout.as_secs()
                ),
            ),
        })
}

/// The largest guardrail report accepted.
const MAX_REPORT_BYTES: usize = 16 * 1024;

/// A guardrail trip reported by a proxy that pulls its routes.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GuardrailReport {
    /// The candidate version cut off.
    version: String,
    /// The guardrail's name.
    guardrail: String,
    /// What was measured, for the history.
    #[serde(default)]
    detail: String,
}

pub(super) async fn guardrail(
    controller: &Controller,
    name: &str,
    req: Request<Incoming>,
    timeout: Duration,
) -> Response<ApiBody> {
    let body = match read_body(req, MAX_REPORT_BYTES, timeout, "the report").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let report: GuardrailReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!("the report is not {{\"version\", \"guardrail\", \"detail\"}}: {e}"),
            );
        }
    };
    match controller.report_guardrail_trip(name, &report.version, report.guardrail, report.detail) {
        Ok(()) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": true }),
        ),
        Err(e) => controller_error(&e),
    }
}

pub(super) async fn submit(
    controller: Controller,
    req: Request<Incoming>,
    timeout: Duration,
) -> Response<ApiBody> {
    let name = req
        .headers()
        .get("x-cutover-filename")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("release.yaml")
        .to_string();
    let body = match read_body(req, MAX_RELEASE_BYTES, timeout, "the release").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "the release is not UTF-8 text",
        );
    };
    let release = match Controller::parse(&name, text) {
        Ok(release) => release,
        Err(e) => return controller_error(&e),
    };
    // Runs to the end even if the client goes away (a CI job cancelled mid-request):
    // a submission dropped half-way would leave the release's driver held still.
    detached(
        "submission",
        async move { controller.submit(release).await },
        |status| json(StatusCode::CREATED, &*status),
    )
    .await
}

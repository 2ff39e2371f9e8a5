//! The sibling APIs (siblings.md): `get_job_instance_status`, `get_job_instance_ip_log` and
//! `batch_get_job_instance_ip_log`, with the same headers, authentication, scopes, envelope,
//! languages and error rules as `get_step_instance_status`. Their answers are rendered in the
//! query's turn and written holding it (they can be large: logs up to 64 MiB).

use super::admit::CallerApp;
use super::error::ApiError;
use super::i18n::Lang;
use super::internal::fetch_part;
use super::limits::run;
use super::render::{self, JobStepPart};
use super::respond::{json, request_id, to_api_error, with_code};
use super::state::AppState;
use super::turns::Turn;
use crate::cluster::Route;
use crate::query::{BatchLogQuery, JobQuery, LogQuery};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Answers one request: `answer` gives the body or the error; the rest is shared.
async fn respond(
    headers: &HeaderMap,
    answer: impl std::future::Future<Output = Result<Body, ApiError>>,
) -> Response {
    let lang = Lang::of(headers);
    let request_id = request_id(headers);
    let (status, code, body) = match answer.await {
        Ok(body) => (StatusCode::OK, 0, body),
        Err(e) => (
            e.http_status(),
            e.code(),
            Body::from(render::failure(&e, lang, &request_id)),
        ),
    };
    let mut resp = json(status, Vec::new(), &request_id);
    *resp.body_mut() = body;
    with_code(resp, code)
}

/// The job's record is on the member owning the job id's partition (requests are routed there);
/// its steps are on the members serving their partitions: each partition's part is asked of the
/// one member serving it now, and the answer is 503 while any partition has none.
pub async fn job_status(
    State(state): State<Arc<AppState>>,
    Extension(q): Extension<JobQuery>,
    Extension(caller): Extension<CallerApp>,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id(&headers);
    respond(&headers, async {
        let lookup = q.clone();
        let (job, _) = run(&state, false, move |r, _| r.job(&lookup))
            .await
            .map_err(|e| to_api_error(&state, e, &request_id))?;
        let Some(cluster) = state.cluster.clone() else {
            let (steps, _) = local_part(&state, q, |_| true, &request_id).await?;
            return Ok(Body::from(render::job_status(
                &job,
                steps,
                &request_id,
                crate::now_ms(),
            )));
        };
        let partitions = cluster.partitions();
        if partitions == 0 {
            return Err(ApiError::PartitionMoving(None));
        }
        let mut by_member: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let mut mine = Vec::new();
        for p in 0..partitions {
            match cluster.route(p) {
                Route::Local => mine.push(p),
                Route::Forward(url) => by_member.entry(url).or_default().push(p),
                Route::Moving => return Err(ApiError::PartitionMoving(Some(p))),
            }
        }
        let app = caller.app.unwrap_or_default();
        let remote = futures_util::future::join_all(
            by_member
                .iter()
                .map(|(url, partitions)| fetch_part(&state, url, &app, &q, partitions)),
        );
        let held = {
            let (cluster, mine) = (Arc::clone(&cluster), mine.clone());
            move |step: i64| {
                cluster
                    .partition_of(step)
                    .is_some_and(|p| mine.contains(&p))
            }
        };
        let local = local_part(&state, q.clone(), held, &request_id);
        let (remote, local) = tokio::join!(remote, local);
        let (mut steps, turn) = local?;
        // Still served here once read: else it may have moved on meanwhile.
        if let Some(p) = mine.iter().find(|p| !cluster.serves(**p)) {
            return Err(ApiError::PartitionMoving(Some(*p)));
        }
        for part in remote {
            steps.extend(part?);
        }
        Ok(turn.body(render::job_status(
            &job,
            steps,
            &request_id,
            crate::now_ms(),
        )))
    })
    .await
}

/// This instance's steps of a job that `held` keeps, rendered in the query's turn.
async fn local_part(
    state: &Arc<AppState>,
    q: JobQuery,
    held: impl Fn(i64) -> bool + Send + 'static,
    request_id: &str,
) -> Result<(Vec<JobStepPart>, Turn), ApiError> {
    let expensive = q.return_ip_result;
    run(state, expensive, move |r, c| {
        let steps = r.job_steps(&q, held, c)?;
        Ok(render::job_steps(&steps, crate::now_ms()))
    })
    .await
    .map_err(|e| to_api_error(state, e, request_id))
}

pub async fn ip_log(
    State(state): State<Arc<AppState>>,
    Extension(q): Extension<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id(&headers);
    respond(&headers, async {
        let rid = request_id.clone();
        let (body, turn) = run(&state, true, move |r, c| {
            let (script, log) = r.ip_log(&q, c)?;
            Ok(render::ip_log(script, &log, &rid))
        })
        .await
        .map_err(|e| to_api_error(&state, e, &request_id))?;
        Ok(turn.body(body))
    })
    .await
}

pub async fn batch_ip_log(
    State(state): State<Arc<AppState>>,
    Extension(q): Extension<BatchLogQuery>,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id(&headers);
    respond(&headers, async {
        let (job, step) = (q.job_instance_id, q.step_instance_id);
        let rid = request_id.clone();
        let (body, turn) = run(&state, true, move |r, c| {
            let answer = r.batch_ip_logs(&q, c)?;
            Ok(render::batch_ip_logs(&answer, job, step, &rid))
        })
        .await
        .map_err(|e| to_api_error(&state, e, &request_id))?;
        Ok(turn.body(body))
    })
    .await
}

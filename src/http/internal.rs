//! Requests one member makes of another on its own behalf (cluster.md, "Forwarding"): the parts
//! of `get_job_instance_status`, each asked of the member serving those partitions. They exist
//! on shards only, carry no caller secret, and are signed with the members' secret over what
//! they ask and when, naming the app they are made for; the receiver refuses anything else, and
//! still checks that app's scope and that it serves every partition it is asked about, before
//! and after it reads.

use super::error::ApiError;
use super::i18n::Lang;
use super::limits::run;
use super::params;
use super::render::{self, JobStepPart};
use super::respond::{json, request_id, to_api_error};
use super::routes::JOB_PART_ROUTE;
use super::state::AppState;
use crate::cluster::secret::{SignedRequest, APP_HEADER, SIGNATURE_HEADER, TIME_HEADER};
use crate::cluster::Cluster;
use crate::query::{JobQuery, MAX_LOG_BYTES};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// The query of a job part: the caller's job query, and the partitions asked for.
fn part_query(q: &JobQuery, partitions: &[i32]) -> String {
    let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
    form_urlencoded::Serializer::new(String::new())
        .append_pair("bk_scope_type", q.scope_type.as_str())
        .append_pair("bk_scope_id", &q.scope_id)
        .append_pair("job_instance_id", &q.job_instance_id.to_string())
        .append_pair("return_ip_result", &q.return_ip_result.to_string())
        .append_pair("partitions", &list.join(","))
        .finish()
}

/// The partitions a job part asks for.
fn partitions_of(query: Option<&str>) -> Option<Vec<i32>> {
    let (_, list) =
        form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == "partitions")?;
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect()
}

/// Asks the member at `url` for its part of a job (the steps of `partitions`), signed for `app`.
/// Any failure is 503: the job cannot be answered whole right now.
pub async fn fetch_part(
    state: &AppState,
    url: &str,
    app: &str,
    q: &JobQuery,
    partitions: &[i32],
) -> Result<Vec<JobStepPart>, ApiError> {
    let (Some(cluster), Some(forwarder)) = (&state.cluster, &state.forwarder) else {
        return Err(ApiError::Internal);
    };
    let query = part_query(q, partitions);
    let time_ms = crate::now_ms();
    let signature = cluster.secret.request_signature(&SignedRequest {
        method: "GET",
        path: JOB_PART_ROUTE,
        query: &query,
        body: b"",
        time_ms,
        app,
    });
    let moving = |why: String| {
        tracing::warn!(
            member = url,
            why,
            "a member did not answer for its part of a job"
        );
        ApiError::PartitionMoving(None)
    };
    let resp = forwarder
        .client
        .get(format!(
            "{}{JOB_PART_ROUTE}?{query}",
            url.trim_end_matches('/')
        ))
        .timeout(state.limits.timeout + Duration::from_secs(2))
        .header(APP_HEADER, app)
        .header(TIME_HEADER, time_ms.to_string())
        .header(SIGNATURE_HEADER, signature)
        .send()
        .await
        .map_err(|e| moving(e.to_string()))?;
    // Read within a bound: a member's answer is never taken whole on trust.
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| moving(e.to_string()))?;
        if body.len() + chunk.len() > MAX_LOG_BYTES {
            return Err(ApiError::TooMuchOutput(MAX_LOG_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    #[derive(serde::Deserialize)]
    struct PartAnswer {
        result: bool,
        code: i64,
        data: Option<Vec<JobStepPart>>,
    }
    let answer: PartAnswer =
        serde_json::from_slice(&body).map_err(|e| moving(format!("unreadable answer: {e}")))?;
    match answer {
        PartAnswer {
            result: true,
            data: Some(steps),
            ..
        } => Ok(steps),
        PartAnswer { code: 1240003, .. } => Err(ApiError::TooMuchOutput(MAX_LOG_BYTES)),
        PartAnswer { code, .. } => Err(moving(format!("answered code {code}"))),
    }
}

/// Whether every one of `partitions` is served here.
fn serves_all(cluster: &Cluster, partitions: &[i32]) -> Result<(), ApiError> {
    match partitions.iter().find(|p| !cluster.serves(**p)) {
        Some(p) => Err(ApiError::PartitionMoving(Some(*p))),
        None => Ok(()),
    }
}

/// `GET /internal/v1/job_steps`: this member's part of a job, for another member.
pub async fn job_part(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id(&headers);
    let (status, body) = match answer_part(&state, &method, &uri, &headers, &request_id).await {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => (
            e.http_status(),
            render::failure(&e, Lang::of(&headers), &request_id),
        ),
    };
    json(status, body, &request_id)
}

async fn answer_part(
    state: &Arc<AppState>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let cluster = state.cluster.as_ref().ok_or(ApiError::NoSuchApi)?;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(app), Some(time), Some(signature)) =
        (text(APP_HEADER), text(TIME_HEADER), text(SIGNATURE_HEADER))
    else {
        return Err(ApiError::AuthFailed);
    };
    let request = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        body: b"",
        time_ms: time.parse().map_err(|_| ApiError::AuthFailed)?,
        app,
    };
    if !cluster
        .secret
        .request_signed(&request, signature, crate::now_ms())
    {
        return Err(ApiError::AuthFailed);
    }
    let q = params::job_query(uri.query())?;
    let caller = state.auth.member_request_for(app);
    caller.check_scope(q.scope_type, &q.scope_id)?;
    let partitions = partitions_of(uri.query()).ok_or(ApiError::BadParam(
        "partitions",
        super::error::Problem::NotInteger,
    ))?;
    serves_all(cluster, &partitions)?;
    let expensive = q.return_ip_result;
    let of_partitions = {
        let (cluster, partitions) = (Arc::clone(cluster), partitions.clone());
        move |step: i64| {
            cluster
                .partition_of(step)
                .is_some_and(|p| partitions.contains(&p))
        }
    };
    let request_id_owned = request_id.to_owned();
    let (body, _turn) = run(state, expensive, move |r, c| {
        let steps = r.job_steps(&q, of_partitions, c)?;
        let parts = render::job_steps(&steps, crate::now_ms());
        Ok(render::job_part(&parts, &request_id_owned))
    })
    .await
    .map_err(|e| to_api_error(state, e, request_id))?;
    // Still served when read: else another member may have moved it on meanwhile.
    serves_all(cluster, &partitions)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ScopeType;

    #[test]
    fn a_part_names_its_partitions_and_the_callers_query() {
        let q = JobQuery {
            scope_type: ScopeType::Biz,
            scope_id: "2".into(),
            job_instance_id: 9,
            return_ip_result: true,
        };
        let query = part_query(&q, &[1, 5]);
        assert_eq!(partitions_of(Some(&query)), Some(vec![1, 5]));
        assert_eq!(params::job_query(Some(&query)).unwrap().job_instance_id, 9);
        assert_eq!(partitions_of(Some("partitions=1,x")), None);
        assert_eq!(partitions_of(Some("partitions=")), Some(vec![]));
    }
}

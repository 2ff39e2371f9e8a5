//! Admission of every API request, before anything else happens to it: authentication, then
//! the parameters (the body is read only once the caller is known), then the scope (api.md's
//! order of errors); then, on a shard, where it is answered: here, by the member serving its
//! partition (forwarded as it came), or 503. Nothing unauthenticated leaves the instance, and the
//! id a request is routed by is the one its handler answers for: the handler takes the query
//! parsed here (a request extension) and parses nothing again.

use super::error::ApiError;
use super::forward::{self, FORWARDED};
use super::i18n::Lang;
use super::params;
use super::render;
use super::respond::{
    authenticated, json, request_id, usable_id, with_code, ApiCode, GATEWAY_REQUEST_ID,
};
use super::routes::{
    BACKEND_BATCH_IP_LOG_ROUTE, BACKEND_IP_LOG_ROUTE, BACKEND_JOB_STATUS_ROUTE, BACKEND_ROUTE,
    BACKEND_WATCH_ROUTE, BATCH_IP_LOG_ROUTE, IP_LOG_ROUTE, JOB_STATUS_ROUTE, ROUTE, SYSTEM_ROUTE,
    WATCH_ROUTE,
};
use super::state::AppState;
use crate::cluster::Route;
use crate::events::ScopeType;
use crate::query::{BatchLogQuery, JobQuery, LogQuery, StepQuery};
use crate::telemetry::http::{Forwarded, RequestAnswered};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// Largest request body read (the batch log API's is far smaller: 500 hosts).
const MAX_BODY: usize = 1 << 20;

/// A request's query, authenticated, parsed and allowed its scope.
#[derive(Debug, Clone)]
pub enum Admitted {
    Step(StepQuery),
    Job(JobQuery),
    Log(LogQuery),
    BatchLog(BatchLogQuery),
}

/// Who a request was admitted for (`None` with authentication off): what the request's log line
/// says, and the app a member signs for when it asks another on the caller's behalf.
#[derive(Debug, Clone)]
pub struct CallerApp {
    pub app: Option<String>,
    pub user: Option<String>,
}

impl Admitted {
    /// The id that routes the request: the step's; the job's for `get_job_instance_status`.
    pub fn routing_id(&self) -> i64 {
        match self {
            Admitted::Step(q) => q.step_instance_id,
            Admitted::Job(q) => q.job_instance_id,
            Admitted::Log(q) => q.step_instance_id,
            Admitted::BatchLog(q) => q.step_instance_id,
        }
    }

    fn scope(&self) -> (ScopeType, &str) {
        match self {
            Admitted::Step(q) => (q.scope_type, &q.scope_id),
            Admitted::Job(q) => (q.scope_type, &q.scope_id),
            Admitted::Log(q) => (q.scope_type, &q.scope_id),
            Admitted::BatchLog(q) => (q.scope_type, &q.scope_id),
        }
    }

    /// Puts the query where its handler takes it.
    fn insert_into(self, extensions: &mut axum::http::Extensions) {
        match self {
            Admitted::Step(q) => drop(extensions.insert(q)),
            Admitted::Job(q) => drop(extensions.insert(q)),
            Admitted::Log(q) => drop(extensions.insert(q)),
            Admitted::BatchLog(q) => drop(extensions.insert(q)),
        }
    }
}

/// The query of a request to `route`: the one parser of every API route, for routing and
/// handling alike.
pub fn parse(route: &str, query: Option<&str>, body: &[u8]) -> Result<Admitted, ApiError> {
    match route {
        JOB_STATUS_ROUTE | BACKEND_JOB_STATUS_ROUTE => params::job_query(query).map(Admitted::Job),
        IP_LOG_ROUTE | BACKEND_IP_LOG_ROUTE => params::log_query(query).map(Admitted::Log),
        BATCH_IP_LOG_ROUTE | BACKEND_BATCH_IP_LOG_ROUTE => {
            params::batch_log_query(body).map(Admitted::BatchLog)
        }
        ROUTE | SYSTEM_ROUTE | WATCH_ROUTE | BACKEND_ROUTE | BACKEND_WATCH_ROUTE => {
            params::step_query(query).map(Admitted::Step)
        }
        _ => Err(ApiError::NoSuchApi),
    }
}

/// Middleware on the API routes: admits the request, then answers it here, forwards it to the
/// member serving its partition, or says that partition is moving; and writes the request's log
/// line and metrics (with who asked) once it is answered here.
pub async fn admit(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route.as_str().to_owned();
    let (mut parts, body) = req.into_parts();
    // One id for the request, here and in its handler (and at the member it may go to).
    let request_id = request_id(&parts.headers);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        parts.headers.insert("x-request-id", v);
    }
    let gateway_request_id = usable_id(&parts.headers, GATEWAY_REQUEST_ID).map(str::to_owned);
    let answered = |resp: &Response, caller: Option<&CallerApp>| {
        let code = resp.extensions().get::<ApiCode>().map_or(0, |c| c.0);
        RequestAnswered {
            route: &route,
            status: resp.status().as_u16(),
            code,
            took: started.elapsed(),
            request_id: &request_id,
            app: caller.and_then(|c| c.app.as_deref()),
            user: caller.and_then(|c| c.user.as_deref()),
            gateway_request_id: gateway_request_id.as_deref(),
        }
        .emit(&state.telemetry);
    };
    let refused = |e: ApiError, headers: &HeaderMap, caller: Option<&CallerApp>| {
        let body = render::failure(&e, Lang::of(headers), &request_id);
        let resp = with_code(json(e.http_status(), body, &request_id), e.code());
        answered(&resp, caller);
        resp
    };
    let caller = match authenticated(&state, &parts.headers) {
        Ok(caller) => caller,
        Err(e) => return refused(e, &parts.headers, None),
    };
    let who = CallerApp {
        app: caller.app.clone(),
        user: caller.user.clone(),
    };
    // Read only for a caller that is known.
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let why = format!("it is over {MAX_BODY} bytes, or could not be read");
            return refused(ApiError::BadBody(why), &parts.headers, Some(&who));
        }
    };
    let admitted = parse(&route, parts.uri.query(), &body).and_then(|q| {
        let (scope_type, scope_id) = q.scope();
        caller.check_scope(scope_type, scope_id).map(|()| q)
    });
    let admitted = match admitted {
        Ok(q) => q,
        Err(e) => return refused(e, &parts.headers, Some(&who)),
    };
    if let Some(cluster) = &state.cluster {
        let partition = cluster.partition_of(admitted.routing_id());
        let forwarded = parts.headers.contains_key(FORWARDED);
        match partition.map(|p| (p, cluster.route(p))) {
            Some((_, Route::Local)) => {}
            Some((p, Route::Forward(url))) if !forwarded => {
                return forward::to_member(&state, &url, p, parts, body).await;
            }
            unserved => {
                Forwarded::Unavailable.emit(&state.telemetry);
                return forward::moving(&parts.headers, unserved.map(|(p, _)| p));
            }
        }
    }
    admitted.insert_into(&mut parts.extensions);
    parts.extensions.insert(who.clone());
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    answered(&resp, Some(&who));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(route: &str, query: Option<&str>, body: &[u8]) -> Option<i64> {
        parse(route, query, body).ok().map(|q| q.routing_id())
    }

    /// The id a request is routed by is the one its handler answers for, however the request
    /// spells it (forwarding and handling once read it in two ways).
    #[test]
    fn routing_and_handling_read_the_same_id() {
        let base = "bk_scope_type=biz&bk_scope_id=2&job_instance_id=1";
        for (query, want) in [
            (format!("{base}&step_instance_id=101"), 101),
            // An empty first occurrence means "not given": the next one counts.
            (
                format!("{base}&step_instance_id=&step_instance_id=101"),
                101,
            ),
            (format!("{base}&step_instance_id=+101"), 101),
            (
                format!("{base}&step_instance_id=101&step_instance_id=7"),
                101,
            ),
        ] {
            for route in [ROUTE, SYSTEM_ROUTE, WATCH_ROUTE, IP_LOG_ROUTE] {
                let query = if route == IP_LOG_ROUTE {
                    format!("{query}&bk_host_id=1")
                } else {
                    query.clone()
                };
                let parsed = parse(route, Some(&query), b"").unwrap();
                let handled = match &parsed {
                    Admitted::Step(q) => q.step_instance_id,
                    Admitted::Log(q) => q.step_instance_id,
                    _ => unreachable!(),
                };
                assert_eq!(parsed.routing_id(), handled);
                assert_eq!(handled, want, "{route}?{query}");
            }
        }
        assert_eq!(routed(JOB_STATUS_ROUTE, Some(base), b""), Some(1));
        for body in [
            &br#"{"bk_scope_type":"biz","bk_scope_id":"2","job_instance_id":1,"step_instance_id":7,"host_id_list":[1]}"#[..],
            br#"{"bk_scope_type":"biz","bk_scope_id":"2","job_instance_id":1,"step_instance_id":"7","host_id_list":[1]}"#,
        ] {
            assert_eq!(routed(BATCH_IP_LOG_ROUTE, None, body), Some(7));
        }
        // No id: nothing to route by, and the handler would refuse it too.
        assert_eq!(routed(ROUTE, Some(base), b""), None);
        assert_eq!(
            routed(ROUTE, Some(&format!("{base}&step_instance_id=x")), b""),
            None
        );
    }
}

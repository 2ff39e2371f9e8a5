//! The paths of the API, as api.md and siblings.md give them, and of the routes between members.

pub const ROUTE: &str = "/api/v3/get_step_instance_status";
pub const SYSTEM_ROUTE: &str = "/api/v3/system/get_step_instance_status";
pub const WATCH_ROUTE: &str = "/api/v3/watch_step_instance_status";
pub const JOB_STATUS_ROUTE: &str = "/api/v3/get_job_instance_status";
pub const IP_LOG_ROUTE: &str = "/api/v3/get_job_instance_ip_log";
pub const BATCH_IP_LOG_ROUTE: &str = "/api/v3/batch_get_job_instance_ip_log";
/// A member's part of a job (`internal`), for the member answering the job.
pub const JOB_PART_ROUTE: &str = "/internal/v1/job_steps";

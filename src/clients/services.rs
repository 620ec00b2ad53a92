//! The services as the engine sees them: what it asks of NCA, of GoAPI and of a track's
//! host, and nothing of how. The HTTP clients are the implementations production runs;
//! the deterministic simulation (`tests/it/sim`) plays the services behind the same
//! traits, with answers from a seeded fault plan.

use async_trait::async_trait;
use serde_json::Value;

use super::ClientError;
use super::goapi::{CreateTask, GoapiClient};
use super::nca::{MixRequest, NcaAccepted, NcaClient};
use super::track::{TrackAnswer, TrackChecker};
use crate::domain::MediaUrl;

/// The NCA Toolkit: submit a mix, and the two ways to ask after one.
#[async_trait]
pub trait Nca: Send + Sync {
    async fn submit_mix(&self, req: &MixRequest) -> Result<NcaAccepted, ClientError>;
    /// NCA's jobs whose status changed in the last `since_seconds` (its envelope).
    async fn recent_jobs(&self, since_seconds: u64) -> Result<Value, ClientError>;
    /// One job's status (its envelope).
    async fn job_status(&self, job_id: &str) -> Result<Value, ClientError>;
}

/// GoAPI: create a music task, and fetch one by its id.
#[async_trait]
pub trait Goapi: Send + Sync {
    /// The created task's id.
    async fn create_task(&self, req: &CreateTask) -> Result<String, ClientError>;
    /// The task object (`data` of the envelope).
    async fn get_task(&self, task_id: &str) -> Result<Value, ClientError>;
}

/// Whether a music track's host still serves it.
#[async_trait]
pub trait TrackHost: Send + Sync {
    async fn check(&self, url: &MediaUrl) -> TrackAnswer;
}

#[async_trait]
impl Nca for NcaClient {
    async fn submit_mix(&self, req: &MixRequest) -> Result<NcaAccepted, ClientError> {
        NcaClient::submit_mix(self, req).await
    }
    async fn recent_jobs(&self, since_seconds: u64) -> Result<Value, ClientError> {
        NcaClient::recent_jobs(self, since_seconds).await
    }
    async fn job_status(&self, job_id: &str) -> Result<Value, ClientError> {
        NcaClient::job_status(self, job_id).await
    }
}

#[async_trait]
impl Goapi for GoapiClient {
    async fn create_task(&self, req: &CreateTask) -> Result<String, ClientError> {
        GoapiClient::create_task(self, req).await
    }
    async fn get_task(&self, task_id: &str) -> Result<Value, ClientError> {
        GoapiClient::get_task(self, task_id).await
    }
}

#[async_trait]
impl TrackHost for TrackChecker {
    async fn check(&self, url: &MediaUrl) -> TrackAnswer {
        TrackChecker::check(self, url).await
    }
}

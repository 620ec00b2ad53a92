//! A whole world for end-to-end tests: the real binary, the GoAPI and NCA doubles, and
//! the records (the embedded store the binary uses, opened from the test too).

use std::sync::Arc;
use std::time::Duration;

use reelstate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use reelstate::records::embedded::sqlite::SqliteRecords;
use reelstate::records::{JobFields, Mapping, Records, VideoFields};
use serde_json::Value;

use super::app::{AppBuilder, GOAPI_SECRET, TestApp};
use super::goapi_double::GoapiDouble;
use super::nca_double::NcaDouble;

/// The task id of GoAPI's recorded udio payloads (`tests/fixtures/goapi/udio_*.json`).
pub const UDIO_TASK: &str = "5c7a1e2b-8d3f-4f6a-9b21-0e4d7c9a1f33";

pub struct World {
    pub app: TestApp,
    pub nca: NcaDouble,
    pub goapi: GoapiDouble,
    pub records: Records,
}

pub struct WorldBuilder {
    pub app: AppBuilder,
}

impl WorldBuilder {
    pub fn new() -> Self {
        Self {
            app: AppBuilder::new(),
        }
    }

    pub fn app(mut self, f: impl FnOnce(AppBuilder) -> AppBuilder) -> Self {
        self.app = f(self.app);
        self
    }

    pub async fn start(self) -> World {
        let nca = NcaDouble::start().await;
        let goapi = GoapiDouble::start().await;
        let builder = self.app.nca(&nca).goapi(&goapi);
        let mapping = Mapping::default();
        let backend = SqliteRecords::open(&builder.db_path(), &mapping).expect("records");
        let records = Records::new(Arc::new(backend), mapping);
        let app = builder.spawn().await;
        World {
            app,
            nca,
            goapi,
            records,
        }
    }
}

impl Default for WorldBuilder {
    fn default() -> Self {
        Self::new()
    }
}

pub fn url(s: &str) -> MediaUrl {
    MediaUrl::parse(s).expect("valid url")
}

impl World {
    pub async fn start() -> Self {
        WorldBuilder::new().start().await
    }

    /// A video whose segments are combined, as the pipeline's earlier stages leave it.
    pub async fn seed_video(&self, n: usize) -> RecordId {
        self.records
            .create_video(&VideoFields {
                status: Some(VideoStatus::SegmentsCombined),
                combined_segments_video: Some(url(&format!(
                    "{}/videos/combined-{n}.mp4",
                    self.nca.url()
                ))),
                music_prompt: Some(format!("calm piano #{n}")),
                ..VideoFields::default()
            })
            .await
            .expect("seed video")
    }

    /// A video in generating_music with a processing music_generation job that another
    /// part of the pipeline created, bound to `task_id` (as the reference handler expects).
    pub async fn seed_generating(&self, n: usize, task_id: Option<&str>) -> RecordId {
        self.seed_generating_job(n, task_id).await.0
    }

    /// [`Self::seed_generating`], with the pipeline's Jobs record too.
    pub async fn seed_generating_job(
        &self,
        n: usize,
        task_id: Option<&str>,
    ) -> (RecordId, RecordId) {
        let video = self.seed_video(n).await;
        self.records
            .update_video(
                &video,
                &VideoFields {
                    status: Some(VideoStatus::GeneratingMusic),
                    ..VideoFields::default()
                },
            )
            .await
            .expect("status");
        let job = self
            .records
            .write_job(&JobFields {
                job_id: format!("pipeline-job-{n}-{}", video),
                job_type: Some(JobType::MusicGeneration),
                status: Some(JobStatus::Processing),
                related_video: Some(video.clone()),
                external_job_id: task_id.map(str::to_owned),
                webhook_url: None,
                error_details: None,
                timestamps: None,
            })
            .await
            .expect("seed job");
        (video, job)
    }

    /// A video whose first mix failed with `message` (later mixes succeed), with
    /// the GoAPI task and the track it got.
    pub async fn failed_mix(&self, message: &str) -> (RecordId, String, String) {
        let video = self.seed_video(1).await;
        self.nca.set_fail_mix(true);
        self.nca.set_failure_message(message);
        let (s, body) = self.request_music(&video).await;
        assert_eq!(s, 202, "{body}");
        let v = self.wait_settled(&video, "music_addition_failed").await;
        self.nca.set_fail_mix(false);
        let tasks = self.goapi.tasks();
        assert_eq!(tasks.len(), 1);
        assert_eq!(self.nca.submissions().len(), 1);
        let track = v["music"].as_str().expect("the track is stored").to_owned();
        assert!(track.starts_with(&self.goapi.url()), "{track}");
        (video, tasks[0].task_id.clone(), track)
    }

    /// POSTs a GoAPI webhook body as GoAPI would (secret header included).
    pub async fn goapi_webhook(&self, video: &RecordId, body: &Value) -> (u16, Value) {
        let r = self
            .app
            .client
            .post(format!("{}/webhooks/goapi?video_id={video}", self.app.url))
            .header("x-webhook-secret", GOAPI_SECRET)
            .json(body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GoAPI calls back with a recorded payload (`tests/fixtures/goapi/<fixture>`) for
    /// `task`, sent at `timestamp`.
    pub async fn goapi_says(
        &self,
        video: &RecordId,
        fixture: &str,
        task: &str,
        timestamp: i64,
    ) -> (u16, Value) {
        self.goapi_webhook(video, &goapi_fixture(fixture, task, timestamp))
            .await
    }

    /// `POST /videos/{id}/retry`, with `body` sent as JSON when there is one.
    pub async fn retry(&self, video: &RecordId, body: Option<&str>) -> (u16, Value) {
        let mut req = self
            .app
            .client
            .post(format!("{}/videos/{video}/retry", self.app.url));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let r = req.send().await.expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn request_music(&self, video: &RecordId) -> (u16, Value) {
        let r = self
            .app
            .client
            .post(format!("{}/videos/{video}/music", self.app.url))
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn wait_status(&self, video: &RecordId, status: &str) -> Value {
        let want = status.to_owned();
        self.app
            .wait_for_video(video.as_str(), Duration::from_secs(30), move |v| {
                v["status"] == want.as_str()
            })
            .await
    }

    /// Waits until the video is in `status` and its effects have all run.
    pub async fn wait_settled(&self, video: &RecordId, status: &str) -> Value {
        self.app
            .wait_settled(video.as_str(), status, Duration::from_secs(30))
            .await
    }
}

/// A fixture with its task id and timestamp replaced.
pub fn goapi_fixture(name: &str, task_id: &str, timestamp: i64) -> Value {
    let mut v = super::fixture_json(&format!("goapi/{name}"));
    if v.get("data").is_some() {
        v["data"]["task_id"] = Value::from(task_id);
        v["timestamp"] = Value::from(timestamp);
    } else {
        v["task_id"] = Value::from(task_id);
    }
    v
}

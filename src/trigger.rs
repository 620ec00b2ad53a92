//! `reelstate trigger <kind>`: sends a correctly authenticated sample webhook to a running
//! server, in the spirit of `stripe trigger`, so that an operator can exercise a path
//! without waiting for GoAPI or NCA. The samples are the recorded payloads the tests use.
//! What the command line leaves out is asked of the server: the task and job from the
//! video's own record, and, from a `--sandbox` server only, the secrets it made up for its
//! run (a production server never hands out a secret).

use serde_json::{Value, json};

use crate::domain::{JobType, RecordId};
use crate::webhook::callback::CallbackSigner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    GoapiPending,
    GoapiProcessing,
    GoapiCompleted,
    GoapiFailed,
    NcaSuccess,
    NcaFailure,
}

const UDIO_PENDING: &str = include_str!("../tests/fixtures/goapi/udio_pending.json");
const UDIO_PROCESSING: &str = include_str!("../tests/fixtures/goapi/udio_processing.json");
const UDIO_COMPLETED: &str = include_str!("../tests/fixtures/goapi/udio_completed.json");
const UDIO_FAILED: &str = include_str!("../tests/fixtures/goapi/udio_failed.json");
const NCA_SUCCESS: &str = include_str!("../tests/fixtures/nca/compose_success_webhook.json");
const NCA_FAILURE: &str = include_str!("../tests/fixtures/nca/compose_failure_webhook.json");

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("{0} is not an Airtable record id")]
    BadVideo(String),
    #[error(
        "GoAPI webhooks need the server's GOAPI_WEBHOOK_SECRET to authenticate (a --sandbox server hands out its own)"
    )]
    NoGoapiSecret,
    #[error(
        "NCA callbacks need the server's REELSTATE_SIGNING_SECRET (a --sandbox server hands out its own) and --job to sign the URL"
    )]
    NoSigning,
    #[error("cannot ask the server: {0}")]
    Server(String),
    #[error("video {video} has no {kind} job{what}; name it with {flag}")]
    NoJob {
        video: String,
        kind: JobType,
        what: &'static str,
        flag: &'static str,
    },
    #[error("cannot sign the callback URL: {0}")]
    Signer(String),
}

/// What to send where: the URL, the headers and the body.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

pub struct Options<'a> {
    pub server: &'a str,
    pub video: &'a str,
    pub task: &'a str,
    pub job: Option<&'a str>,
    pub submission_id: Option<&'a str>,
    pub goapi_secret: Option<&'a str>,
    pub signing_secret: Option<&'a str>,
}

/// Builds the request; pure, so the CLI and its tests share it.
pub fn build(kind: Kind, o: &Options<'_>) -> Result<Request, TriggerError> {
    let video = RecordId::parse(o.video).map_err(|_| TriggerError::BadVideo(o.video.into()))?;
    let server = o.server.trim_end_matches('/');
    let sample = |text: &str| -> Value { serde_json::from_str(text).unwrap_or(Value::Null) };
    match kind {
        Kind::GoapiPending | Kind::GoapiProcessing | Kind::GoapiCompleted | Kind::GoapiFailed => {
            let secret = o.goapi_secret.ok_or(TriggerError::NoGoapiSecret)?;
            let mut body = sample(match kind {
                Kind::GoapiPending => UDIO_PENDING,
                Kind::GoapiProcessing => UDIO_PROCESSING,
                Kind::GoapiCompleted => UDIO_COMPLETED,
                _ => UDIO_FAILED,
            });
            body["data"]["task_id"] = json!(o.task);
            body["timestamp"] = json!(crate::clock::now().timestamp());
            Ok(Request {
                url: format!("{server}/webhooks/goapi?video_id={video}"),
                headers: vec![("x-webhook-secret", secret.to_owned())],
                body,
            })
        }
        Kind::NcaSuccess | Kind::NcaFailure => {
            let (Some(key), Some(job)) = (o.signing_secret, o.job) else {
                return Err(TriggerError::NoSigning);
            };
            let signer = CallbackSigner::new(key.as_bytes(), server)
                .map_err(|e| TriggerError::Signer(e.to_string()))?;
            let mut body = sample(if kind == Kind::NcaSuccess {
                NCA_SUCCESS
            } else {
                NCA_FAILURE
            });
            body["id"] = json!(
                o.submission_id
                    .map(str::to_owned)
                    .unwrap_or_else(|| crate::machine::submission_id(&video, 1))
            );
            Ok(Request {
                url: signer.nca_url(&video, job),
                headers: Vec::new(),
                body,
            })
        }
    }
}

/// What the command line gave; `fill_in` asks the server for what it left out.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub server: String,
    pub video: String,
    pub task: Option<String>,
    pub job: Option<String>,
    pub submission_id: Option<String>,
    pub goapi_secret: Option<String>,
    pub signing_secret: Option<String>,
    pub admin_token: Option<String>,
}

impl Given {
    pub fn options(&self) -> Options<'_> {
        Options {
            server: &self.server,
            video: &self.video,
            task: self.task.as_deref().unwrap_or_default(),
            job: self.job.as_deref(),
            submission_id: self.submission_id.as_deref(),
            goapi_secret: self.goapi_secret.as_deref(),
            signing_secret: self.signing_secret.as_deref(),
        }
    }
}

async fn get_json(
    http: &reqwest::Client,
    g: &Given,
    path: &str,
) -> Result<Option<Value>, TriggerError> {
    let mut req = http.get(format!("{}{path}", g.server.trim_end_matches('/')));
    if let Some(t) = &g.admin_token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| TriggerError::Server(e.to_string()))?;
    let status = resp.status();
    // Not a sandbox, or no such video: the caller says what is missing.
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body = resp
        .text()
        .await
        .map_err(|e| TriggerError::Server(e.to_string()))?;
    if !status.is_success() {
        return Err(TriggerError::Server(format!("GET {path}: {status} {body}")));
    }
    serde_json::from_str(&body)
        .map(Some)
        .map_err(|e| TriggerError::Server(format!("GET {path}: {e}")))
}

/// Completes `g` for `kind` from the running server: the secret (a sandbox's own only),
/// the GoAPI task or the NCA job (the video's latest of that type).
pub async fn fill_in(kind: Kind, mut g: Given) -> Result<Given, TriggerError> {
    let http = reqwest::Client::new();
    let goapi = matches!(
        kind,
        Kind::GoapiPending | Kind::GoapiProcessing | Kind::GoapiCompleted | Kind::GoapiFailed
    );
    let secret_missing = if goapi {
        g.goapi_secret.is_none()
    } else {
        g.signing_secret.is_none()
    };
    if secret_missing && let Some(s) = get_json(&http, &g, "/sandbox/secrets").await? {
        let field = |name: &str| s[name].as_str().map(str::to_owned);
        g.goapi_secret = g.goapi_secret.or_else(|| field("goapi_webhook_secret"));
        g.signing_secret = g.signing_secret.or_else(|| field("signing_secret"));
    }
    let job_missing = if goapi {
        g.task.is_none()
    } else {
        g.job.is_none()
    };
    if !job_missing {
        return Ok(g);
    }
    let video = RecordId::parse(&g.video).map_err(|_| TriggerError::BadVideo(g.video.clone()))?;
    let v = get_json(&http, &g, &format!("/videos/{video}"))
        .await?
        .unwrap_or(Value::Null);
    let kind = if goapi {
        JobType::MusicGeneration
    } else {
        JobType::MusicAddition
    };
    let kind_name = kind.name();
    let latest = v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|j| j["type"] == kind_name);
    let missing = |what, flag| TriggerError::NoJob {
        video: g.video.clone(),
        kind: kind.clone(),
        what,
        flag,
    };
    if goapi {
        let task = latest.and_then(|j| j["external_id"].as_str());
        g.task = Some(
            task.ok_or_else(|| missing(" with a GoAPI task id", "--task"))?
                .to_owned(),
        );
    } else {
        let job = latest.and_then(|j| j["job_id"].as_str());
        let job = job.ok_or_else(|| missing("", "--job"))?.to_owned();
        if g.submission_id.is_none() {
            g.submission_id = latest
                .and_then(|j| j["submission_id"].as_str())
                .map(str::to_owned);
        }
        g.job = Some(job);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts<'a>() -> Options<'a> {
        Options {
            server: "http://127.0.0.1:8080/",
            video: "recA1b2C3d4E5f6G7",
            task: "task-1",
            job: Some("job-1"),
            submission_id: None,
            goapi_secret: Some("s"),
            signing_secret: Some("a-signing-secret-of-some-length"),
        }
    }

    #[test]
    fn goapi_samples_carry_the_task_and_the_secret() {
        let r = build(Kind::GoapiCompleted, &opts()).unwrap();
        assert_eq!(
            r.url,
            "http://127.0.0.1:8080/webhooks/goapi?video_id=recA1b2C3d4E5f6G7"
        );
        assert_eq!(r.body["data"]["task_id"], "task-1");
        assert_eq!(r.body["data"]["status"], "completed");
        assert_eq!(r.headers, vec![("x-webhook-secret", "s".to_owned())]);
    }

    #[test]
    fn nca_samples_go_to_a_signed_url() {
        let r = build(Kind::NcaSuccess, &opts()).unwrap();
        assert!(r.url.contains("token="), "{}", r.url);
        assert_eq!(r.body["id"], "add_music:recA1b2C3d4E5f6G7:1");
        let no_key = Options {
            signing_secret: None,
            ..opts()
        };
        assert!(matches!(
            build(Kind::NcaFailure, &no_key),
            Err(TriggerError::NoSigning)
        ));
        let bad = Options {
            video: "nope",
            ..opts()
        };
        assert!(matches!(
            build(Kind::GoapiPending, &bad),
            Err(TriggerError::BadVideo(_))
        ));
    }
}

//! GoAPI client (unified task API): orders a music task and fetches a task for
//! reconciliation. Knows GoAPI's request shapes only; parsing task payloads belongs to the
//! webhook module.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::error::{Answered, ClientError, from_status};
use super::http::{Http, Reply};

const SERVICE: &str = "GoAPI";

#[derive(Clone)]
pub struct GoapiConfig {
    pub api_url: String,
    pub api_key: String,
    /// `music-u` (Udio), `suno`, `Qubico/ace-step` or `Qubico/diffrhythm`.
    pub model: String,
    pub timeout: Duration,
}

// Hand-written so that `{:?}` of a config never prints the key.
impl fmt::Debug for GoapiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoapiConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct CreateTask {
    /// A description of the music (instrumental is always requested).
    pub prompt: String,
    pub webhook_url: String,
    /// Sent back verbatim by GoAPI in `x-webhook-secret`.
    pub webhook_secret: String,
}

impl fmt::Debug for CreateTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateTask")
            .field("prompt", &self.prompt)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &"[redacted]")
            .finish()
    }
}

/// The music models whose request shape we know (docs/goapi-and-nca.md). Anything else is refused
/// at construction rather than sent with a guessed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Udio,
    Suno,
    AceStep,
    DiffRhythm,
}

impl Model {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "music-u" => Some(Self::Udio),
            "suno" => Some(Self::Suno),
            "Qubico/ace-step" => Some(Self::AceStep),
            "Qubico/diffrhythm" => Some(Self::DiffRhythm),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Udio => "music-u",
            Self::Suno => "suno",
            Self::AceStep => "Qubico/ace-step",
            Self::DiffRhythm => "Qubico/diffrhythm",
        }
    }

    /// `(task_type, input)` for an instrumental track described by `prompt`.
    fn task(self, prompt: &str) -> (&'static str, Value) {
        match self {
            Self::Udio => (
                "generate_music",
                json!({
                    "gpt_description_prompt": prompt,
                    "lyrics_type": "instrumental",
                    "negative_tags": "",
                    "seed": -1,
                }),
            ),
            Self::Suno => (
                "generate_music",
                json!({ "gpt_description_prompt": prompt, "make_instrumental": true }),
            ),
            // `[inst]` is ACE-Step's marker for "no vocals". The music is looped under the
            // video by NCA (-stream_loop -1), so a minute is enough for any length.
            Self::AceStep => (
                "txt2audio",
                json!({ "style_prompt": prompt, "lyrics": "[inst]", "duration": 60 }),
            ),
            // As the production pipeline sent it (fixture diffrhythm_completed.json).
            Self::DiffRhythm => (
                "txt2audio-base",
                json!({ "style_prompt": prompt, "lyrics": "NoLyrics", "style_audio": "" }),
            ),
        }
    }
}

pub struct GoapiClient {
    http: Http,
    model: Model,
}

impl GoapiClient {
    pub fn new(cfg: GoapiConfig) -> Result<Self, ClientError> {
        let model = Model::parse(cfg.model.trim()).ok_or_else(|| {
            ClientError::permanent(
                None,
                format!(
                    "GoAPI: unsupported model {:?} (music-u, suno, Qubico/ace-step, Qubico/diffrhythm)",
                    crate::text::shorten(&cfg.model, 100)
                ),
            )
        })?;
        Ok(Self {
            http: Http::new(SERVICE, &cfg.api_url, &cfg.api_key, cfg.timeout)?,
            model,
        })
    }

    /// The exact body `create_task` POSTs for this client's model.
    pub fn task_body(&self, req: &CreateTask) -> Value {
        let (task_type, input) = self.model.task(&req.prompt);
        json!({
            "model": self.model.name(),
            "task_type": task_type,
            "input": input,
            "config": {
                "service_mode": "public",
                "webhook_config": { "endpoint": req.webhook_url, "secret": req.webhook_secret },
            },
        })
    }

    /// Creates the task and returns its `task_id`. A `Transient` error after the request
    /// left (timeout, reset) is ambiguous: GoAPI may have created (and will bill) the task.
    pub async fn create_task(&self, req: &CreateTask) -> Result<String, ClientError> {
        let url = self.http.url(&["api", "v1", "task"])?;
        tracing::debug!(model = self.model.name(), "GoAPI create task");
        let reply = self
            .http
            .send(self.http.client.post(url).json(&self.task_body(req)))
            .await?;
        let data = self.envelope_data(reply)?;
        data.get("task_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            // The task may exist and will call back on the URL that names its job: settled
            // like any answer that does not prove a refusal, never a failed job nor an
            // immediate second (paid) task.
            .ok_or_else(|| ClientError::Ambiguous("GoAPI: created task has no task_id".into()))
    }

    /// The task object (`data` of the envelope), for reconciliation.
    pub async fn get_task(&self, task_id: &str) -> Result<Value, ClientError> {
        if task_id.is_empty() {
            return Err(ClientError::permanent(None, "GoAPI: empty task id"));
        }
        // `url()` percent-encodes the id as one path segment: no traversal, no query.
        let url = self.http.url(&["api", "v1", "task", task_id])?;
        let reply = self.http.send(self.http.client.get(url)).await?;
        let data = self.envelope_data(reply)?;
        if data.is_object() {
            Ok(data)
        } else {
            Err(ClientError::permanent(
                Some(200),
                "GoAPI: task reply has no task object",
            ))
        }
    }

    /// Checks the HTTP status and the `{code, data, message}` envelope; returns `data`.
    fn envelope_data(&self, reply: Reply) -> Result<Value, ClientError> {
        if reply.status == 401 {
            return Err(ClientError::permanent(
                Some(401),
                "GoAPI: unauthorized (check the GoAPI key)",
            ));
        }
        let message = self.http.message_of(&reply);
        let code = reply
            .json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(Value::as_i64);
        let http_ok = (200..300).contains(&reply.status);
        match code {
            Some(200) if http_ok => {}
            // GoAPI reports some failures in the envelope with HTTP 200: classify the code
            // as an HTTP status when it looks like one. A `code: 500` there does not say
            // the task was not created (docs/goapi-and-nca.md): it is ambiguous.
            Some(code) if http_ok => {
                let effective = u16::try_from(code)
                    .ok()
                    .filter(|c| (100..600).contains(c))
                    .unwrap_or(reply.status);
                let err = from_status(SERVICE, effective, &message, Answered::App);
                return Err(match err {
                    ClientError::Transient(m) => {
                        ClientError::Transient(format!("{m} (envelope code {code})"))
                    }
                    ClientError::Ambiguous(m) => {
                        ClientError::Ambiguous(format!("{m} (envelope code {code})"))
                    }
                    ClientError::Permanent { status, message } => ClientError::Permanent {
                        status,
                        message: format!("{message} (envelope code {code})"),
                    },
                });
            }
            None if http_ok => {
                return Err(ClientError::permanent(
                    Some(reply.status),
                    format!("GoAPI: reply is not a task envelope: {message}"),
                ));
            }
            // GoAPI's own answers carry its envelope; a bare page is a gateway's.
            Some(_) => return Err(from_status(SERVICE, reply.status, &message, Answered::App)),
            None => {
                return Err(from_status(
                    SERVICE,
                    reply.status,
                    &message,
                    Answered::Unknown,
                ));
            }
        }
        let mut json = reply.json.unwrap_or(Value::Null);
        Ok(json.get_mut("data").map(Value::take).unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(model: &str) -> Result<GoapiClient, ClientError> {
        GoapiClient::new(GoapiConfig {
            api_url: "http://goapi.test".into(),
            api_key: "k".into(),
            model: model.into(),
            timeout: Duration::from_secs(1),
        })
    }

    fn req() -> CreateTask {
        CreateTask {
            prompt: "calm piano".into(),
            webhook_url: "https://example.org/webhooks/goapi".into(),
            webhook_secret: "s3cret".into(),
        }
    }

    #[test]
    fn udio_body_matches_the_contract() {
        let body = client("music-u").map(|c| c.task_body(&req()));
        assert_eq!(
            body,
            Ok(json!({
                "model": "music-u",
                "task_type": "generate_music",
                "input": {"gpt_description_prompt": "calm piano", "lyrics_type": "instrumental", "negative_tags": "", "seed": -1},
                "config": {"service_mode": "public", "webhook_config": {"endpoint": "https://example.org/webhooks/goapi", "secret": "s3cret"}}
            }))
        );
    }

    #[test]
    fn other_models_get_their_task_type() {
        for (model, task_type) in [
            ("suno", "generate_music"),
            ("Qubico/ace-step", "txt2audio"),
            ("Qubico/diffrhythm", "txt2audio-base"),
        ] {
            let body = client(model).map(|c| c.task_body(&req()));
            let body = body.unwrap_or(Value::Null);
            assert_eq!(body["model"], model);
            assert_eq!(body["task_type"], task_type);
        }
        assert!(client("midjourney").is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        assert!(!format!("{:?}", req()).contains("s3cret"));
    }
}

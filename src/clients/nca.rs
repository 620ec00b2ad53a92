//! NCA Toolkit client: submits the "music under the voice-over" mix and reads job status.
//! Knows NCA's request shapes only; parsing NCA's result payloads belongs to the webhook module.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::address::{self, Resolver, Rule};
use super::error::{Answered, ClientError, from_status};
use super::http::Http;
use super::http::Reply;
use crate::domain::MediaUrl;

const SERVICE: &str = "NCA";

#[derive(Clone)]
pub struct NcaConfig {
    pub api_url: String,
    pub api_key: String,
    pub timeout: Duration,
}

// Hand-written so that `{:?}` of a config never prints the key.
impl fmt::Debug for NcaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcaConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MixRequest {
    pub video_url: MediaUrl,
    pub music_url: MediaUrl,
    /// Linear gain of the music, 0.2 = 20 %. Must be finite, >= 0 and <= 10.
    pub volume: f64,
    pub webhook_url: String,
    /// Echoed back by NCA in the callback; NCA does not deduplicate on it.
    pub id: String,
    /// Mix under the video's own audio; `false` for a video without an audio track.
    pub voice: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NcaAccepted {
    pub job_id: String,
    /// `Some(final envelope)` when NCA answered 200, i.e. ran the job synchronously
    /// (it does so only when it ignored `webhook_url`): then NO callback will come, and the
    /// caller should treat this envelope as the callback payload. `None` for a queued 202.
    pub finished: Option<Value>,
}

pub struct NcaClient {
    http: Http,
    /// Resolves the media URLs' hosts for the check before they are handed on.
    resolver: std::sync::Arc<dyn Resolver>,
}

/// Volume as ffmpeg's `volume` filter reads it: a plain decimal, at most 4 decimals,
/// no trailing zeros (0.2 → `0.2`, 1 → `1`, 0.1+0.2 → `0.3`). Rounding avoids float noise
/// like `0.30000000000000004` in the filter graph; 1e-4 is far below audibility steps.
pub(crate) fn format_volume(volume: f64) -> String {
    let s = format!("{volume:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match s {
        "" | "-0" => "0".to_owned(),
        other => other.to_owned(),
    }
}

/// The limiter after the mix: `normalize=0` keeps amix from lowering the voice, so a loud
/// voice under loud music sums above full scale (1.10 measured on the real toolkit) and
/// clips. It holds peaks at -1 dBFS (0.891), leaving room for the AAC encoder's overshoot;
/// `level=disabled` keeps it from raising anything quieter, so an unclipped mix passes as
/// it is. `tests/it/mix_ffmpeg.rs` measures both with real ffmpeg.
pub const LIMITER: &str = "alimiter=limit=0.891:level=disabled";

/// The exact `/v1/ffmpeg/compose` body: music looped (`-stream_loop -1`) and mixed at
/// `volume` under the video's own audio, video stream copied. `normalize=0` keeps amix from
/// lowering the voice; `duration=first` ends with the video. Without a voice (a video with
/// no audio track) the music alone is the sound, cut at the video's end by `-shortest`.
/// Only keys NCA's schema knows.
pub fn compose_body(req: &MixRequest) -> Value {
    let volume = format_volume(req.volume);
    let filter = if req.voice {
        format!(
            "[1:a]volume={volume}[bg];[0:a][bg]amix=inputs=2:duration=first:dropout_transition=0:normalize=0,{LIMITER}[aout]"
        )
    } else {
        format!("[1:a]volume={volume},{LIMITER}[aout]")
    };
    let mut output_options = vec![
        json!({ "option": "-map", "argument": "0:v" }),
        json!({ "option": "-map", "argument": "[aout]" }),
        json!({ "option": "-c:v", "argument": "copy" }),
        json!({ "option": "-c:a", "argument": "aac" }),
    ];
    if !req.voice {
        output_options.push(json!({ "option": "-shortest" }));
    }
    json!({
        "inputs": [
            { "file_url": req.video_url.as_str() },
            {
                "file_url": req.music_url.as_str(),
                "options": [ { "option": "-stream_loop", "argument": -1 } ]
            }
        ],
        "filters": [ { "filter": filter } ],
        "outputs": [ { "options": output_options } ],
        "metadata": { "duration": true, "filesize": true },
        "webhook_url": req.webhook_url,
        "id": req.id,
    })
}

impl NcaClient {
    pub fn new(cfg: NcaConfig) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new(SERVICE, &cfg.api_url, &cfg.api_key, cfg.timeout)?,
            resolver: address::system(),
        })
    }

    #[cfg(test)]
    pub(crate) fn with_resolver(mut self, resolver: std::sync::Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// NCA fetches the media from its own network, where a private address may be its
    /// storage but a link-local or metadata one is its machine's credentials. A name that
    /// does not resolve here is handed on: NCA resolves it, maybe differently.
    async fn refuse_unsafe(&self, what: &str, media: &MediaUrl) -> Result<(), ClientError> {
        let url = url::Url::parse(media.as_str()).map_err(|_| {
            ClientError::permanent(None, format!("NCA: the {what} URL is not a URL"))
        })?;
        match address::vet(&url, Rule::HandOn, &*self.resolver).await {
            Ok(_) => Ok(()),
            Err(refused) => Err(ClientError::permanent(
                None,
                format!("NCA: the {what} URL is not handed on: {refused}"),
            )),
        }
    }

    /// Queues the mix. A `Transient` error after the request left (timeout, reset) is
    /// ambiguous: NCA may have queued it, and NCA does not deduplicate by `id`.
    pub async fn submit_mix(&self, req: &MixRequest) -> Result<NcaAccepted, ClientError> {
        if !(req.volume.is_finite() && (0.0..=10.0).contains(&req.volume)) {
            return Err(ClientError::permanent(
                None,
                format!("NCA: volume {} outside 0..=10", req.volume),
            ));
        }
        // Without webhook_url NCA blocks for the whole mix: never send that by accident.
        let webhook = url::Url::parse(&req.webhook_url).ok();
        if !webhook.is_some_and(|u| matches!(u.scheme(), "http" | "https")) {
            return Err(ClientError::permanent(
                None,
                "NCA: webhook_url is not an http(s) URL",
            ));
        }
        self.refuse_unsafe("video", &req.video_url).await?;
        self.refuse_unsafe("music", &req.music_url).await?;
        let url = self.http.url(&["v1", "ffmpeg", "compose"])?;
        tracing::debug!(id = %req.id, "NCA compose submit");
        let reply = self
            .http
            .send(self.http.client.post(url).json(&compose_body(req)))
            .await?;
        match reply.status {
            202 | 200 => {
                let body = reply.json.as_ref();
                let job_id = body
                    .and_then(|b| b.get("job_id"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        // NCA took the job, so neither a retry nor a failure is right: a
                        // failed job's callback would be stale, and the operator's retry a
                        // second render. Ambiguous: the callback (its URL names the job) or
                        // the look-up by our submission id settles it.
                        ClientError::Ambiguous(format!(
                            "NCA: accepted without a job_id: {}",
                            self.http.message_of(&reply)
                        ))
                    })?
                    .to_owned();
                let finished = if reply.status == 200 {
                    reply.json.clone()
                } else {
                    None
                };
                Ok(NcaAccepted { job_id, finished })
            }
            401 => Err(ClientError::permanent(
                Some(401),
                "NCA: unauthorized (check the NCA API key)",
            )),
            status => Err(self.error_of(status, &reply)),
        }
    }

    /// An error reply, classified by who answered it (docs/goapi-and-nca.md): NCA's own
    /// replies are JSON envelopes; its queue-full 429 is refused before queueing.
    fn error_of(&self, status: u16, reply: &Reply) -> ClientError {
        let message = self.http.message_of(reply);
        let from_app = reply.json.as_ref().is_some_and(|j| {
            j.is_object() && (j.get("message").is_some() || j.get("code").is_some())
        });
        let answered = if !from_app {
            Answered::Unknown
        } else if status == 429 && message.contains("MAX_QUEUE_LENGTH") {
            Answered::AppRefusedUnqueued
        } else {
            Answered::App
        };
        from_status(SERVICE, status, &message, answered)
    }

    /// NCA's jobs whose status changed in the last `since_seconds`, as `(job_id,
    /// job_status)` pairs (`POST /v1/toolkit/jobs/status`, build 209). A job names the
    /// request's `id` only once it is done, in its status (`job_status`).
    pub(crate) async fn recent_jobs(&self, since_seconds: u64) -> Result<Value, ClientError> {
        let body = json!({ "since_seconds": since_seconds });
        self.status_reply(
            &["v1", "toolkit", "jobs", "status"],
            &body,
            &[200],
            "jobs status",
        )
        .await
    }

    /// The raw status reply for 200 (known job) and 404 (unknown job, e.g. after an NCA
    /// restart: its queue lives in memory). Parsing it is the webhook module's business.
    pub async fn job_status(&self, job_id: &str) -> Result<Value, ClientError> {
        let body = json!({ "job_id": job_id });
        self.status_reply(
            &["v1", "toolkit", "job", "status"],
            &body,
            &[200, 404],
            "job status",
        )
        .await
    }

    /// POSTs `body` to one of the toolkit's status endpoints: its JSON object for the
    /// statuses that carry one (`readable`), else the error the reply proves.
    async fn status_reply(
        &self,
        path: &[&str],
        body: &Value,
        readable: &[u16],
        what: &str,
    ) -> Result<Value, ClientError> {
        let url = self.http.url(path)?;
        let reply = self
            .http
            .send(self.http.client.post(url).json(body))
            .await?;
        match reply.status {
            status if readable.contains(&status) => match reply.json {
                Some(body) if body.is_object() => Ok(body),
                // A 404 that is not NCA's JSON comes from a wrong api_url or a proxy.
                _ => Err(ClientError::permanent(
                    Some(status),
                    format!("NCA: {what} reply is not a JSON object"),
                )),
            },
            401 => Err(ClientError::permanent(
                Some(401),
                "NCA: unauthorized (check the NCA API key)",
            )),
            status => Err(self.error_of(status, &reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_is_formatted_minimally() {
        assert_eq!(format_volume(0.2), "0.2");
        assert_eq!(format_volume(1.0), "1");
        assert_eq!(format_volume(0.0), "0");
        assert_eq!(format_volume(-0.0), "0");
        assert_eq!(format_volume(0.35), "0.35");
        assert_eq!(format_volume(0.1 + 0.2), "0.3");
        assert_eq!(format_volume(2.5), "2.5");
        assert_eq!(format_volume(10.0), "10");
        assert_eq!(format_volume(0.12346), "0.1235");
    }

    #[test]
    fn config_debug_hides_the_key() {
        let cfg = NcaConfig {
            api_url: "http://nca".into(),
            api_key: "sekrit".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("sekrit"));
    }

    fn client(resolver: crate::clients::address::StaticResolver) -> NcaClient {
        NcaClient::new(NcaConfig {
            // Nothing listens on port 9: a request that goes out fails to connect.
            api_url: "http://127.0.0.1:9".into(),
            api_key: "k".into(),
            timeout: Duration::from_secs(2),
        })
        .unwrap()
        .with_resolver(std::sync::Arc::new(resolver))
    }

    fn mix(video: &str, music: &str) -> MixRequest {
        MixRequest {
            video_url: MediaUrl::parse(video).unwrap(),
            music_url: MediaUrl::parse(music).unwrap(),
            volume: 0.2,
            webhook_url: "http://127.0.0.1:8080/webhooks/nca-toolkit".into(),
            id: "add_music:x:1".into(),
            voice: true,
        }
    }

    #[tokio::test]
    async fn link_local_and_metadata_media_are_refused_before_nca_is_called() {
        use crate::clients::address::StaticResolver;
        let nca = client(
            StaticResolver::default()
                .with("media.example", &["169.254.3.4"])
                .with("bucket.internal", &["10.1.2.3"]),
        );
        let video = "http://127.0.0.1/v.mp4";
        for (music, named) in [
            (
                "http://169.254.169.254/latest/t.mp3",
                "host 169.254.169.254 is a cloud metadata address",
            ),
            (
                "http://[fe80::1]/t.mp3",
                "host fe80::1 is a link-local address",
            ),
            (
                "http://metadata.google.internal/t.mp3",
                "host metadata.google.internal is a cloud metadata service's name",
            ),
            (
                "http://media.example/t.mp3",
                "host media.example resolves to 169.254.3.4, a link-local address",
            ),
        ] {
            let err = nca.submit_mix(&mix(video, music)).await.unwrap_err();
            assert_eq!(
                err,
                ClientError::permanent(
                    None,
                    format!("NCA: the music URL is not handed on: {named}")
                ),
                "{music}"
            );
        }
        let err = nca
            .submit_mix(&mix(
                "http://[::ffff:169.254.169.254]/v.mp4",
                "http://127.0.0.1/t.mp3",
            ))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("the video URL is not handed on"),
            "{err}"
        );
        // Loopback, private and unresolvable names go on to NCA: the request is sent
        // (and fails to connect, nobody listening), rather than refused.
        for music in [
            "http://127.0.0.1/t.mp3",
            "http://bucket.internal/t.mp3",
            "http://only-nca-knows.example/t.mp3",
        ] {
            let err = nca.submit_mix(&mix(video, music)).await.unwrap_err();
            assert!(matches!(err, ClientError::Transient(_)), "{music}: {err}");
        }
    }
}

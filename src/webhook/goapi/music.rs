//! Whether a GoAPI task is a music task: GoAPI sends every task of the account, videos and
//! images included, to the same webhook.

use serde_json::Value;

use super::MAX_TRACKS;

const MUSIC_WORDS: &[&str] = &[
    "music",
    "audio",
    "song",
    "suno",
    "diffrhythm",
    "ace-step",
    "acestep",
    "lyric",
];
/// A token, not a substring: "udio" is inside "studio".
const MUSIC_TOKENS: &[&str] = &["udio"];
const VISUAL_WORDS: &[&str] = &[
    "video",
    "image",
    "img",
    "kling",
    "hailuo",
    "luma",
    "midjourney",
    "flux",
    "imagine",
    "upscale",
    "faceswap",
    "hunyuan",
    "seedance",
    "skyreels",
    "framepack",
    "trellis",
    "dall",
    "sora",
];
const VISUAL_TOKENS: &[&str] = &[
    "wan",
    "veo",
    "i2v",
    "t2v",
    "pan",
    "zoom",
    "outpaint",
    "inpaint",
    "reroll",
    "variation",
    "describe",
    "blend",
];

/// Whether a task is a music task.
///
/// Rule, biased towards "music" because mistaking one of our music tasks for a video
/// task would drop its result silently, while mistaking a video task for music only
/// makes the machine reject an unknown task id:
/// 1. music if `model` or `task_type` names audio/music (`music-u`, `suno`, `udio`,
///    `Qubico/ace-step`, `Qubico/diffrhythm`, `txt2audio*`, `generate_music*`, `music`…)
///    or `output` has an audio shape (`songs`, `clips`, `audio_url`);
/// 2. otherwise not music if `model`/`task_type` name an image/video product or task
///    (`kling`, `hailuo`, `luma`, `midjourney`, `Qubico/flux…`, `txt2img`, `img2video`,
///    `video_generation`, `imagine`, `upscale`…), or `output` only has image/video keys;
/// 3. otherwise music (the flat format, which has no model, and models we do not know).
pub(crate) fn is_music(model: Option<&str>, task_type: Option<&str>, output: &Value) -> bool {
    let labels: Vec<String> = [model, task_type]
        .into_iter()
        .flatten()
        .map(str::to_ascii_lowercase)
        .collect();
    let tokens: Vec<&str> = labels
        .iter()
        .flat_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|t| !t.is_empty())
        .collect();
    let says = |words: &[&str], toks: &[&str]| {
        labels.iter().any(|l| words.iter().any(|w| l.contains(w)))
            || tokens.iter().any(|t| toks.contains(t))
    };
    if says(MUSIC_WORDS, MUSIC_TOKENS) || has_audio_shape(output) {
        return true;
    }
    !(says(VISUAL_WORDS, VISUAL_TOKENS) || has_only_visual_shape(output))
}

fn has_audio_shape(output: &Value) -> bool {
    let audio_keys = |v: &Value| {
        ["songs", "clips", "audio_url", "song_path"]
            .iter()
            .any(|k| v.get(k).is_some_and(|x| !x.is_null()))
    };
    match output {
        Value::Object(_) => audio_keys(output),
        Value::Array(items) => items.iter().take(MAX_TRACKS).any(audio_keys),
        _ => false,
    }
}

fn has_only_visual_shape(output: &Value) -> bool {
    const VISUAL_KEYS: &[&str] = &[
        "video_url",
        "video_urls",
        "image_url",
        "image_urls",
        "images",
        "video",
        "works",
        "temporary_image_urls",
    ];
    output
        .as_object()
        .is_some_and(|o| VISUAL_KEYS.iter().any(|k| o.contains_key(*k)) && !o.contains_key("url"))
}

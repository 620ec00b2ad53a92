//! Callback tokens: arbitrary signing keys, base URLs and callback parameters. No panic;
//! arbitrary parameters never verify; a URL we hand out verifies after the route's own
//! query parsing, and stops verifying when the endpoint or any parameter changes.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use reelstate::domain::RecordId;
use reelstate::webhook::{AuthError, CallbackEndpoint, CallbackParams, CallbackSigner};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: &'a [u8],
    base_url: &'a str,
    nca: bool,
    params: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    video: [u8; 14],
    job: &'a str,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The query as `http::Request::param` reads it: the first value of each name.
fn params_of(url: &str) -> CallbackParams {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let get = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    CallbackParams {
        video_id: get("video_id"),
        operation: get("operation"),
        job: get("job"),
        token: get("token"),
    }
}

fuzz_target!(|input: Input| {
    let Ok(signer) = CallbackSigner::new(input.key, input.base_url) else {
        return;
    };
    assert!(input.key.len() >= CallbackSigner::MIN_KEY_BYTES);
    assert!(!signer.base_url().ends_with('/'));
    let (endpoint, other) = if input.nca {
        (CallbackEndpoint::Nca, CallbackEndpoint::Goapi)
    } else {
        (CallbackEndpoint::Goapi, CallbackEndpoint::Nca)
    };

    // Arbitrary parameters (token included) never verify.
    let (video_id, operation, job, token) = input.params;
    let arbitrary = CallbackParams {
        video_id,
        operation,
        job,
        token,
    };
    assert!(
        signer.verify(endpoint, &arbitrary).is_err(),
        "arbitrary token verified"
    );

    // A URL we hand out verifies, through the route's query parsing.
    let video: String = std::iter::once("rec".to_owned())
        .chain(
            input
                .video
                .iter()
                .map(|b| (ALNUM[*b as usize % ALNUM.len()] as char).to_string()),
        )
        .collect();
    let video = RecordId::parse(&video).expect("a record id");
    let url = match endpoint {
        CallbackEndpoint::Nca => signer.nca_url(&video, input.job),
        CallbackEndpoint::Goapi => signer.goapi_url(&video, input.job),
    };
    assert!(url.starts_with(signer.base_url()));
    assert!(url[signer.base_url().len()..].starts_with(endpoint.path()));
    let good = params_of(&url);
    assert_eq!(good.video_id.as_deref(), Some(video.as_str()));
    assert_eq!(good.job.as_deref(), Some(input.job));
    assert_eq!(
        signer.verify(endpoint, &good),
        Ok(()),
        "our own URL refused: {url}"
    );

    // Any change is refused: the other endpoint, another job, video or operation, a
    // parameter dropped, a token cut short.
    assert_eq!(signer.verify(other, &good), Err(AuthError::Mismatch));
    let changed = |f: &dyn Fn(&mut CallbackParams)| {
        let mut p = good.clone();
        f(&mut p);
        signer.verify(endpoint, &p)
    };
    assert!(changed(&|p| p.job = Some(format!("{}x", input.job))).is_err());
    assert!(changed(&|p| p.job = None).is_err());
    assert!(changed(&|p| p.video_id = None).is_err());
    assert!(changed(&|p| p.video_id = Some(format!("{}x", video.as_str()))).is_err());
    assert!(
        changed(&|p| p.operation = Some(match &p.operation {
            Some(o) => format!("{o}x"),
            None => String::new(),
        }))
        .is_err()
    );
    assert!(changed(&|p| p.token = p.token.as_ref().map(|t| t[..t.len() - 1].to_owned())).is_err());
});

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

const SECRETS: [&str; 7] = [
    "goapi-webhook-secret-value",
    "signing-secret-value-0123456789",
    "admin-token-value-0123456789",
    "airtable-token-value",
    "nca-api-key-value",
    "goapi-api-key-value",
    // Valid base64, as validation requires of a Standard Webhooks secret.
    "whsec_cmVsYXktc2VjcmV0LXZhbHVl",
];

/// Production-like flags; `drop` leaves some out. Flags, not the environment, so the
/// test does not depend on (or change) the process's variables.
fn args(extra: &[&str], drop: &[&str]) -> ServeArgs {
    let mut v: Vec<String> = vec!["reelstate".into()];
    let given = [
        ("--listen", "127.0.0.1:8080"),
        ("--goapi-webhook-secret", SECRETS[0]),
        ("--signing-secret", SECRETS[1]),
        ("--admin-token", SECRETS[2]),
        ("--airtable-token", SECRETS[3]),
        ("--airtable-base-id", "appBASE"),
        ("--nca-api-url", "http://nca.example"),
        ("--nca-api-key", SECRETS[4]),
        ("--goapi-api-key", SECRETS[5]),
        ("--relay-secrets", SECRETS[6]),
        ("--public-base-url", "https://reelstate.example"),
        (
            "--db",
            "postgres://user:db-password-value@db.internal/reelstate",
        ),
    ];
    for (k, val) in given {
        if !drop.contains(&k) {
            v.push(k.into());
            v.push(val.into());
        }
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    Cli::try_parse_from(v).expect("flags parse").serve
}

#[test]
fn the_admin_token_is_required_outside_dev_even_on_loopback() {
    for listen in ["127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080"] {
        let r = args(&["--listen", listen], &["--admin-token", "--listen"]).validate();
        assert!(
            matches!(
                r.as_ref().map_err(|e| e.problems()),
                Err([ConfigError::NoAdminToken])
            ),
            "{listen}: {r:?}"
        );
    }
    let err = args(&[], &["--admin-token"]).validate().unwrap_err();
    assert!(err.to_string().contains("REELSTATE_ADMIN_TOKEN"), "{err}");
    // --dev (and --sandbox, which implies it) keeps the local workflow open.
    let dev = args(&["--dev"], &["--admin-token"]).validate().unwrap();
    assert!(dev.admin_token.is_none());
    assert!(args(&["--sandbox"], &["--admin-token"]).validate().is_ok());
    assert!(args(&[], &[]).validate().is_ok());
}

#[test]
fn the_public_base_url_is_required_outside_dev() {
    let r = args(&[], &["--public-base-url"]).validate();
    assert!(
        matches!(
            r.as_ref().map_err(|e| e.problems()),
            Err([ConfigError::NoPublicBaseUrl])
        ),
        "{r:?}"
    );
    assert!(
        r.unwrap_err().to_string().contains("PUBLIC_BASE_URL"),
        "the message names the variable"
    );
    let dev = args(&["--dev"], &["--public-base-url"]).validate().unwrap();
    assert!(dev.public_base_url.is_none());
}

#[test]
fn no_debug_output_shows_a_secret() {
    let raw = args(&[], &[]);
    let settings = raw.clone().validate().expect("valid");
    let shown = [
        format!("{raw:?}"),
        format!("{raw:#?}"),
        format!("{settings:?}"),
        format!("{settings:#?}"),
        format!("{:?}", settings.airtable),
        format!("{:?}", settings.nca),
        format!("{:?}", settings.goapi),
    ];
    for text in &shown {
        for secret in SECRETS.iter().chain(&["db-password-value"]) {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
    }
    // Still useful: which secrets are set, and the non-secret values.
    assert!(
        shown[2].contains("admin_token: Some(\"<redacted>\")"),
        "{}",
        shown[2]
    );
    assert!(shown[2].contains("https://reelstate.example"));
    assert!(shown[0].contains("appBASE"));
}

#[test]
fn retention_defaults_to_30_days() {
    let s = args(&[], &[]).validate().unwrap();
    assert_eq!(s.retention, Duration::from_secs(30 * 24 * 3600));
    let s = args(&["--retention-days", "0.5"], &[]).validate().unwrap();
    assert_eq!(s.retention, Duration::from_secs(12 * 3600));
}

#[test]
fn seconds_from_flags_never_panic() {
    assert_eq!(seconds(f64::NAN, 1.0), Duration::from_secs(1));
    assert_eq!(seconds(-5.0, 0.0), Duration::ZERO);
    assert_eq!(
        seconds(f64::INFINITY, 0.0),
        Duration::from_secs(365 * 24 * 3600)
    );
    assert_eq!(seconds(2.5, 1.0), Duration::from_millis(2500));
}

/// `(flag, environment variable)` of every setting, as clap declares them.
fn declared() -> Vec<(String, String)> {
    use clap::CommandFactory;
    Cli::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((format!("--{}", a.get_long()?), env))
        })
        .collect()
}

#[test]
fn every_problem_is_named_at_once_by_its_variable_and_its_flag() {
    let bare = Cli::try_parse_from(["reelstate"]).unwrap().serve;
    let err = bare.validate().unwrap_err();
    let names: Vec<&str> = err
        .problems()
        .iter()
        .map(|p| match p {
            ConfigError::NoWebhookSecret => "webhook secret",
            ConfigError::NoSigningSecret => "signing secret",
            ConfigError::NoNca { env, .. } => env,
            ConfigError::NoAdminToken => "admin token",
            ConfigError::NoPublicBaseUrl => "public URL",
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "webhook secret",
            "signing secret",
            "NCA_API_URL",
            "NCA_API_KEY",
            "admin token",
            "public URL"
        ]
    );

    // Invalid values too, each beside the others.
    let bad = args(
        &[
            "--signing-secret",
            "short",
            "--public-base-url",
            "https://x.example/?q=1",
            "--music-volume",
            "1.5",
            "--relay-secrets",
            "whsec_not base64!",
            "--airtable-mapping",
            "/nonexistent/mapping.toml",
            "--db",
            "postgres://u@h:notaport/db",
        ],
        &[
            "--airtable-base-id",
            "--db",
            "--signing-secret",
            "--public-base-url",
            "--relay-secrets",
        ],
    );
    let err = bad.validate().unwrap_err();
    assert_eq!(err.problems().len(), 7, "{err}");

    let declared = declared();
    for problem in err.problems().iter().chain(
        Cli::try_parse_from(["reelstate"])
            .unwrap()
            .serve
            .validate()
            .unwrap_err()
            .problems(),
    ) {
        let text = problem.to_string();
        let named: Vec<_> = declared
            .iter()
            .filter(|(flag, env)| text.starts_with(&format!("{env} ({flag})")))
            .collect();
        assert_eq!(
            named.len(),
            1,
            "{text} starts with no declared `ENV (--flag)`"
        );
    }
    let text = err.to_string();
    assert!(
        text.starts_with("cannot serve: 7 settings are missing or invalid"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 8, "{text}");
}

#[test]
fn the_sandbox_makes_up_only_the_secrets_left_unset() {
    let given = args(&["--sandbox"], &[]).validate().unwrap();
    assert_eq!(given.generated, GeneratedSecrets::default());
    assert_eq!(given.goapi_webhook_secret.as_deref(), Some(SECRETS[0]));
    assert_eq!(given.signing_secret, SECRETS[1]);

    let unset = ["--goapi-webhook-secret", "--signing-secret"];
    let own = args(&["--sandbox"], &unset).validate().unwrap();
    let again = args(&["--sandbox"], &unset).validate().unwrap();
    assert!(own.generated.goapi_webhook_secret && own.generated.signing_secret);
    assert!(own.signing_secret.len() >= CallbackSigner::MIN_KEY_BYTES);
    assert_ne!(own.signing_secret, DEV_SIGNING_SECRET);
    assert_ne!(own.signing_secret, again.signing_secret, "one per run");
    assert_ne!(own.goapi_webhook_secret, again.goapi_webhook_secret);
    // --dev alone makes up none: its webhooks stay open and its signing key fixed.
    let dev = args(&["--dev"], &unset).validate().unwrap();
    assert_eq!(dev.generated, GeneratedSecrets::default());
    assert!(dev.goapi_webhook_secret.is_none());
}

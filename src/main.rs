use std::process::ExitCode;

use clap::{Parser, Subcommand};

use reelstate::configuration::ServeArgs;
use reelstate::startup::{Application, shutdown_signal};
use reelstate::telemetry::{self, LogFormat};

/// reelstate: the music stage of an Airtable-driven video pipeline.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "REELSTATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The base the Airtable commands read: what they need of it, and the client they build.
/// Optional to clap, so that a missing one is reported by its environment variable as well
/// as its flag (clap's own message names only the flag), and both at once.
#[derive(clap::Args)]
struct AirtableArgs {
    #[arg(long, env = "AIRTABLE_TOKEN", hide_env_values = true)]
    airtable_token: Option<String>,
    #[arg(long, env = "AIRTABLE_BASE_ID")]
    airtable_base_id: Option<String>,
    #[arg(
        long,
        env = "AIRTABLE_API_URL",
        default_value = "https://api.airtable.com"
    )]
    airtable_api_url: String,
}

impl AirtableArgs {
    fn config(self) -> Result<reelstate::records::airtable::AirtableConfig, String> {
        let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        match (given(self.airtable_token), given(self.airtable_base_id)) {
            (Some(token), Some(base_id)) => Ok(reelstate::records::airtable::AirtableConfig {
                api_url: self.airtable_api_url.trim_end_matches('/').to_owned(),
                token,
                base_id,
                max_attempts: 3,
                ..Default::default()
            }),
            (token, base_id) => {
                let mut missing = Vec::new();
                if token.is_none() {
                    missing.push(
                        "AIRTABLE_TOKEN (--airtable-token): a personal access token with the base's data.records:read and schema.bases:read scopes",
                    );
                }
                if base_id.is_none() {
                    missing.push(
                        "AIRTABLE_BASE_ID (--airtable-base-id): the base's id, app… (in the base's URL)",
                    );
                }
                Err(format!(
                    "no Airtable base to read; set:\n  - {}",
                    missing.join("\n  - ")
                ))
            }
        }
    }
}

/// A usage error: the message, and the exit code clap gives its own usage errors.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("reelstate: {message}");
    ExitCode::from(2)
}

/// The store file the backup commands work on: the service's own setting.
#[derive(clap::Args)]
struct DbArg {
    #[arg(
        long,
        env = "REELSTATE_DB",
        default_value = "./reelstate.db",
        hide_env_values = true
    )]
    db: String,
}

impl DbArg {
    /// The SQLite file; PostgreSQL has its own tools for this.
    fn file(self) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
        if self.db.starts_with("postgres://") || self.db.starts_with("postgresql://") {
            return Err(
                "the store is on PostgreSQL: back it up with pg_dump and restore it with pg_restore (docs/backup.md)"
                    .into(),
            );
        }
        Ok(self.db.into())
    }
}

fn describe(c: &reelstate::store::backup::Copied) -> String {
    let records = match c.records_schema {
        Some(v) => format!(", records schema {v}"),
        None => String::new(),
    };
    format!(
        "store schema {}{records}, {} inbox entries, {} bytes",
        c.store_schema, c.entries, c.bytes
    )
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: webhooks, worker, executor, inspection API.
    Serve(Box<ServeArgs>),
    /// Print the Mermaid state diagrams of the Video and Job lifecycles, drawn from the code.
    States {
        /// Write the diagrams as SVG files (video.svg, job.svg) into this directory instead.
        #[arg(long, value_name = "DIR")]
        svg: Option<std::path::PathBuf>,
    },
    /// Check that the Airtable base has every table, field and select option the engine
    /// writes (reads the base's schema; needs the token's schema.bases:read scope).
    CheckAirtable {
        #[command(flatten)]
        airtable: AirtableArgs,
        #[arg(long, env = "REELSTATE_AIRTABLE_MAPPING")]
        airtable_mapping: Option<std::path::PathBuf>,
    },
    /// Print a mapping file guessed from the base's schema (every guess commented): review
    /// it, save it, point REELSTATE_AIRTABLE_MAPPING at it, then run check-airtable.
    Mapping {
        /// Read the base's schema (the meta API; the token needs schema.bases:read).
        #[arg(long, required = true)]
        from_base: bool,
        #[command(flatten)]
        airtable: AirtableArgs,
    },
    /// Send a correctly authenticated sample webhook to a running server.
    Trigger {
        #[arg(value_enum)]
        kind: reelstate::trigger::Kind,
        /// The video's Airtable record id.
        #[arg(long)]
        video: String,
        /// GoAPI task id to report on (default: the video's latest music_generation job's,
        /// asked of the server).
        #[arg(long)]
        task: Option<String>,
        /// For NCA callbacks: the music_addition job id (default: the video's latest, asked
        /// of the server).
        #[arg(long)]
        job: Option<String>,
        /// For NCA callbacks: the submission id (default: that job's, else add_music:<video>:1).
        #[arg(long)]
        submission_id: Option<String>,
        #[arg(long, env = "REELSTATE_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The server's (default: asked of a --sandbox server, which makes up its own).
        #[arg(long, env = "GOAPI_WEBHOOK_SECRET", hide_env_values = true)]
        goapi_webhook_secret: Option<String>,
        /// The server's (default: asked of a --sandbox server, which makes up its own).
        #[arg(long, env = "REELSTATE_SIGNING_SECRET", hide_env_values = true)]
        signing_secret: Option<String>,
        /// To read the video and the sandbox's secrets from a server that has one.
        #[arg(long, env = "REELSTATE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Copy the SQLite store (its tables and the embedded records') into DEST, one
    /// self-contained file, while the service keeps running on it (docs/backup.md).
    Backup {
        /// The new file (never overwritten).
        dest: std::path::PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
    /// Put a backup in place of the SQLite store of a stopped service; the file it replaces
    /// is moved aside, not deleted (docs/backup.md).
    Restore {
        /// A file made by `reelstate backup`.
        src: std::path::PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
    /// Ask a running server to generate music for a video.
    Music {
        /// The video's Airtable record id.
        video_id: String,
        /// The running server.
        #[arg(long, env = "REELSTATE_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Music prompt (default: the video's Music Prompt field).
        #[arg(long)]
        prompt: Option<String>,
        #[arg(long, env = "REELSTATE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::States { svg: None } => {
            print!("{}", reelstate::machine::mermaid());
            ExitCode::SUCCESS
        }
        Command::States { svg: Some(dir) } => match reelstate::diagram::write_files(&dir) {
            Ok(paths) => {
                for p in paths {
                    println!("{}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "reelstate: cannot write the diagrams into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            telemetry::init(cli.log_format);
            let settings = match args.validate() {
                Ok(s) => s,
                Err(e) => return usage_error(e),
            };
            run_async(async move {
                let app = Application::build(settings).await?;
                // Tests and scripts read the bound address from this line.
                println!("reelstate listening on http://{}", app.local_addr());
                if let Some(video) = app.start_demo().await? {
                    print_sandbox_tour(&format!("http://{}", app.local_addr()), &video);
                }
                app.run_until_stopped(shutdown_signal()).await;
                Ok(())
            })
        }
        Command::CheckAirtable {
            airtable,
            airtable_mapping,
        } => {
            let cfg = match airtable.config() {
                Ok(cfg) => cfg,
                Err(e) => return usage_error(e),
            };
            let mapping = match airtable_mapping.map(|p| reelstate::records::Mapping::load(&p)) {
                None => reelstate::records::Mapping::default(),
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    return usage_error(format_args!(
                        "REELSTATE_AIRTABLE_MAPPING (--airtable-mapping): {e}"
                    ));
                }
            };
            run_async(async move {
                let problems =
                    reelstate::records::airtable::schema::check_schema(&cfg, &mapping).await?;
                if problems.is_empty() {
                    println!("ok: the base has every table, field and option reelstate needs");
                    Ok(())
                } else {
                    for p in &problems {
                        println!("- {p}");
                    }
                    Err(format!("{} schema problem(s)", problems.len()).into())
                }
            })
        }
        Command::Mapping {
            from_base: _,
            airtable,
        } => {
            let cfg = match airtable.config() {
                Ok(cfg) => cfg,
                Err(e) => return usage_error(e),
            };
            run_async(async move {
                let backend = reelstate::records::airtable::AirtableBackend::new(cfg)?;
                let meta = backend.meta_tables().await?;
                print!(
                    "{}",
                    reelstate::records::airtable::guess::mapping_from_meta(&meta)
                );
                Ok(())
            })
        }
        Command::Trigger {
            kind,
            video,
            task,
            job,
            submission_id,
            server,
            goapi_webhook_secret,
            signing_secret,
            admin_token,
        } => run_async(async move {
            let given = reelstate::trigger::Given {
                server,
                video,
                task,
                job,
                submission_id,
                goapi_secret: goapi_webhook_secret,
                signing_secret,
                admin_token,
            };
            let given = reelstate::trigger::fill_in(kind, given).await?;
            let req = reelstate::trigger::build(kind, &given.options())?;
            let mut http = reqwest::Client::new().post(&req.url).json(&req.body);
            for (k, v) in &req.headers {
                http = http.header(*k, v);
            }
            let resp = http.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            println!("{status} {}", resp.text().await.map_err(|e| e.to_string())?);
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("server answered {status}").into())
            }
        }),
        Command::Backup { dest, db } => run_blocking(move || {
            let db = db.file()?;
            let copied = reelstate::store::backup::backup(&db, &dest)?;
            println!(
                "backed up {} to {} ({})",
                db.display(),
                dest.display(),
                describe(&copied)
            );
            Ok(())
        }),
        Command::Restore { src, db } => run_blocking(move || {
            let db = db.file()?;
            let copied = reelstate::store::backup::restore(&src, &db)?;
            if let Some(aside) = &copied.moved_aside {
                println!("moved the previous store to {}", aside.display());
            }
            println!(
                "restored {} from {} ({})",
                db.display(),
                src.display(),
                describe(&copied)
            );
            Ok(())
        }),
        Command::Music {
            video_id,
            server,
            prompt,
            admin_token,
        } => run_async(async move {
            let body = serde_json::json!({ "prompt": prompt });
            let mut req = reqwest::Client::new()
                .post(format!(
                    "{}/videos/{}/music",
                    server.trim_end_matches('/'),
                    video_id
                ))
                .json(&body);
            if let Some(t) = admin_token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| e.to_string())?;
            println!("{text}");
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("server answered {status}").into())
            }
        }),
    }
}

/// What `serve --sandbox` prints: every line that is a command runs as printed, in a
/// second terminal (a test runs each of them).
fn print_sandbox_tour(url: &str, video: &reelstate::domain::RecordId) {
    // The binary that is running: `cargo run` puts none on the PATH.
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "reelstate".into());
    println!("SANDBOX mode: GoAPI and NCA are local stand-ins; nothing real is generated.");
    println!(
        "Demo video {video}: music requested. Watch it go generating_music -> adding_music -> completed:"
    );
    println!("  in a browser: {url}/ui/videos/{video}   (overview: {url}/)");
    println!("  curl -s {url}/videos/{video}");
    println!("  curl -s '{url}/events?video_id={video}'");
    println!("Every video, last changed first:");
    println!("  curl -s {url}/videos");
    println!("Demo videos that fail (each answer says the state it reaches and how to Retry it):");
    for fail in ["music", "mix", "callback_lost"] {
        println!("  curl -s -X POST {url}/sandbox/videos -d '{{\"fail\": \"{fail}\"}}'");
    }
    println!(
        "Send a webhook by hand, as GoAPI would (trigger asks this sandbox for its secrets and the task):"
    );
    println!("  {me} trigger goapi-completed --video {video} --server {url}");
}

fn run_blocking(f: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match f() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reelstate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_async<F>(f: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reelstate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reelstate: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The integration tests, as one test binary: each former `tests/*.rs` file is a module
//! here, and `support` (the app launcher, the GoAPI, NCA and Airtable doubles, the contract
//! suites) is compiled once for all of them instead of once per file.
//!
//! One binary because every test binary links the whole dependency tree (tokio, warp,
//! reqwest, rusqlite, tokio-postgres): 21 of them, 15 compiling `support` again, took three
//! times the CPU of this one to build from clean (docs/bench-log.md, "Test build (issue 15)").
//! The pure tests (the machine's properties, its purity, the `states/` agreement, the
//! parsers) live here too: a binary of their own would link the same dependencies once more,
//! and a filter runs them alone: `cargo test --test it machine_`.
//!
//! Every test stays independent of the others in this one process: servers run as child
//! processes with their own environment (`support::app`), doubles and ports are per test
//! (`127.0.0.1:0`), databases are temporary files or a PostgreSQL schema per test
//! (`support::pg`), and no test sets the process's environment or a global subscriber.
//! Tests that need PostgreSQL run only when `REELSTATE_TEST_DATABASE_URL` is set; those
//! that need ffmpeg or Chromium say so and pass over themselves where it is absent.

mod support;

mod airtable_budget_pg;
mod airtable_client;
mod airtable_first_contact;
mod airtable_lanes;
mod airtable_lifecycle;
mod airtable_production_base;
mod alerts;
mod backup;
mod clients;
mod console_screens;
mod db_outage;
mod deploy;
mod doc_links;
mod documents;
mod intake;
mod lifecycle;
mod machine_properties;
mod machine_purity;
mod mix_ffmpeg;
mod module_graph;
mod money_safety;
mod operations;
mod operator_page;
mod quick_start;
mod records_contract;
mod records_contract_pg;
mod replicas;
mod retry_track;
mod sandbox_failures;
mod sandbox_panel;
mod sigterm_handover;
mod sim;
mod states_agreement;
mod store_contract;
mod string_literals;
mod upgrade;
mod video_accounting;
mod videos_list;
mod webhook_parsing;

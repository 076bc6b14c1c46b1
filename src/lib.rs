//! Noroshi (狼煙): accept an announcement once, fan it out to every channel.
//!
//! # Layout
//! One announcement's path, top to bottom:
//! - [`api`] takes the HTTP request, [`accept`] validates and renders it per channel;
//! - [`store`] writes the announcement and all its deliveries in one transaction;
//! - [`queue`] hands deliveries to workers under a lease;
//! - [`dispatch`] runs per-channel workers: rate gate, one adapter call, recorded outcome;
//! - the adapters live in `channels/*`, found through [`registry`].
//!
//! [`config`] reads the TOML file; [`cli`] is the `noroshi` command; [`server`] wires the
//! daemon together; [`tasks`] supervises every background task under one shutdown signal.

// Problem (the HTTP error) is large, but only ever built on the cold path of a refusal.
#![allow(clippy::result_large_err)]

pub mod accept;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod desk;
pub mod dispatch;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod reach;
pub mod registry;
pub mod schedule;
pub mod server;
pub mod status;
pub mod store;
pub mod tasks;
pub mod time;

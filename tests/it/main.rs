//! Integration tests: the real daemon binary over HTTP on loopback, on SQLite and (when
//! `NOROSHI_TEST_POSTGRES_URL` is set) on PostgreSQL, against fakes of every platform.

mod helpers;

mod cli;
mod console;
mod delivery;
mod deploy;
mod desk;
mod fetch;
mod hardening;
mod input;
mod observe;
mod openapi;
mod proxy;
mod public;
mod schedules;
mod social;
mod storage;

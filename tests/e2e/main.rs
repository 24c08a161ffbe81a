//! End-to-end tests: the real gRPC API over TCP against a real Postgres.
//! One binary so the crate is linked once; each test gets its own database
//! (see `common::spawn_app`).

mod accounts;
mod audit;
mod cli;
mod common;
mod credentials;
mod decisions;
mod delegation;
mod differential;
mod edges;
mod edges_files;
mod embedded;
mod export;
mod freshness;
mod fuzz;
mod fuzz_bodies;
mod grpcurl;
mod health;
mod import;
mod import_concurrency;
mod import_files;
mod import_interrupted;
mod import_sync;
mod keys;
mod last_admin;
mod logs;
mod mail;
mod metrics;
mod passwords;
mod pg_tls;
mod replicas;
mod requests;
mod restart;
mod roles;
mod story;
mod teams;
mod tenants;
mod traces;
mod validation;
mod validation_links_grants_keys;

//! Helpers shared by the integration tests: real parts set up and torn down for a test.
//! `db`: a fresh SQLite or MariaDB database per test.

pub mod db;

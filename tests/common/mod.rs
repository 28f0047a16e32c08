//! Shared helpers for integration tests: real parts (script folders, sshd, databases, VMs),
//! each cleaned up on drop.
#![allow(dead_code)]

pub mod db;
pub mod flows;
pub mod scripts;

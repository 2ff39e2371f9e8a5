//! What several benchmarks share.

#![allow(dead_code, unused_imports)] // each benchmark uses its own part of this module

#[path = "../../tests/common/unique.rs"]
mod unique;

#[path = "../../tests/common/process.rs"]
mod process;

#[path = "../../tests/common/shard.rs"]
mod shard;

pub use process::status_mib;
pub use shard::{Shard, SHARD_SECRET};
pub use unique::{free_port, unique_name};

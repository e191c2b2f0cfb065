//! embtune — fine-tune sentence-embedding encoders without Python.
//!
//! Crate map (dependencies point down):
//! - `cli` — clap types and `Args → Config` (binary side only).
//! - `embed`, `eval` — jobs: encode to files; evaluate STS / triplet / binary.
//! - `model` — `SentenceEncoder`: a family's trainable encoder (`family`: bert, roberta,
//!   xlm-roberta, camembert, distilbert, mpnet, modernbert, nomic_bert, gte, on the shared blocks
//!   of `nn`), pooling, Dense, Normalize, Hub/local loading (`hub`), weights and the
//!   sentence-transformers folder (`st_format`).
//! - `data` — datasets into tables (text, CSV/TSV, JSONL, STS-B).
//! - `encode` — batched, length-sorted inference; `quantize` — embedding precisions (float16,
//!   int8/uint8 with ranges, binary) as sentence-transformers' `quantize_embeddings`.
//! - `tokenize`, `similarity`, `rng`, `fsutil`, `progress`, `device`, `signals` — leaves.
//! - `logging` — the stderr `tracing` subscriber (-v/-q/RUST_LOG), installed by the binary.
//! - `dist` — collective communication for data-parallel training (`Collective`; a threads
//!   backend for CPU checks) and the gathered-embeddings autograd op.
//! - `ops` — leaf: every differentiable op with its backward on each execution path (`Exec`:
//!   composed candle ops, CPU fused, CUDA fused), and the optimizer's kernels.

pub mod bench;
pub mod cli;
pub mod data;
pub mod devcheck;
pub mod device;
pub mod dist;
pub mod embed;
pub mod embed_cache;
pub mod embed_parts;
pub mod embed_write;
pub mod encode;
pub mod eval;
pub mod fsutil;
pub mod logging;
pub mod loss;
pub mod model;
pub mod ops;
pub mod pairs;
pub mod progress;
pub mod quantize;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod shard;
pub mod signals;
pub mod similarity;
pub mod similarity_cmd;
pub mod tokenize;
pub mod train;

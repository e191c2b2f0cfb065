//! The one integration-test binary: every module below is a group of tests.

mod common;

mod cli;
mod datasets;
mod ddp;
mod ddp_processes;
mod device;
mod disk_full;
mod dropout_stats;
mod errors;
mod families;
mod gradients;
mod hostile_input;
mod lint;
mod logging;
mod losses;
mod model_files;
mod multi_dataset;
mod oracle;
mod packing;
mod pairs;
mod parity;
mod prompts;
mod quantize;
mod real_mpnet;
mod recipes;
mod retrieval;
mod retrieval_training;
mod save_load;
mod similarity;
mod streaming;
mod train;
mod trainer_parity;
mod usability;

//! The one integration-test binary: every module below is a group of tests.

mod common;

mod cli;
mod datasets;
mod device;
mod errors;
mod gradients;
mod lint;
mod losses;
mod pairs;
mod parity;
mod save_load;
mod similarity;
mod train;

//! Project tasks: `cargo xtask setup | build-ebpf | test | demo | bench`.
mod bench;
mod build;
mod demo;
mod layers;
mod setup;
mod sh;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "netpath's build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks: nightly rust-src, bpf-linker, Debian packages.
    Setup,
    /// Build the eBPF programs for bpfel-unknown-none (with BTF).
    BuildEbpf,
    /// Set up, build, and run every test. Extra arguments go to the test binaries.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and show two containers talking through the eBPF datapath.
    Demo,
    /// Check that netpath's imports only point down its layers and never form a cycle.
    Layers,
    /// Set up, build, and measure netpath against a veth pair, a Linux bridge, Docker,
    /// netavark and the CNI plugins, each in its own throwaway namespaces.
    Bench(bench::Options),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => build::ebpf(),
        Task::Test { args } => {
            setup::run()?;
            setup::for_tests()?;
            build::all()?;
            let docker = bench::docker_for_tests()?;
            build::test(&args, &docker)
        }
        Task::Layers => layers::run(),
        Task::Demo => {
            setup::run()?;
            build::all()?;
            demo::run()
        }
        Task::Bench(options) => {
            setup::run()?;
            build::all()?;
            bench::run(&options)
        }
    }
}

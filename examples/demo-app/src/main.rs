//! The `demo-app` binary: see the library's documentation.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    demo_app::run(demo_app::Args::parse()).await
}

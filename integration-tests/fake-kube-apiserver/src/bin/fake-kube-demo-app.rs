//! The workspace's demo-app as a binary of this crate, so the fake kubelet in this crate's
//! tests has a real process to run (`env!("CARGO_BIN_EXE_fake-kube-demo-app")`).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    demo_app::run(demo_app::Args::parse()).await
}

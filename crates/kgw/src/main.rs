//! `kgw`: runs the gateway (`kgw run`, `kgw quickstart`) and talks to a running one the way
//! kubectl talks to a cluster (`kgw apply|get|delete`). Wiring only; the work is in the crates.

mod client;
mod crds;
mod run;
mod sample_backend;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kgw",
    version,
    about = "A gateway that speaks kgateway's Kubernetes APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway, reading manifests from files or directories and watching them.
    Run(run::RunArgs),
    /// Run the gateway with kgateway's sample app: an httpbin-compatible backend on loopback,
    /// Gateway `http` (port 8080) and HTTPRoute `httpbin` for www.example.com.
    Quickstart(run::QuickstartArgs),
    /// Apply manifests to a running gateway (`-f FILE`, `-f DIR` or `-f -` for stdin).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Show objects: `kgw get KIND [NAME] [-n NS | -A] [-o yaml|json]`.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(short = 'A', long = "all-namespaces")]
        all_namespaces: bool,
        #[arg(short = 'o', long)]
        output: Option<String>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Delete objects: `kgw delete KIND NAME [-n NS]` or `kgw delete -f FILE`.
    Delete {
        kind: Option<String>,
        names: Vec<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Change one object in place, as kubectl patch: `kgw patch KIND NAME [-n NS] --type
    /// json|merge -p PATCH` (RFC 6902 JSON patch, or RFC 7386 merge patch).
    Patch {
        kind: String,
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// `json` (a list of operations) or `merge`; kubectl's default, `strategic`, needs the
        /// Kubernetes schemas' merge keys and is refused with that reason.
        #[arg(long = "type", default_value = "strategic")]
        patch_type: String,
        #[arg(short = 'p', long = "patch")]
        patch: String,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Print the CustomResourceDefinitions kgw needs: `kgw crds | kubectl apply -f -`. They carry
    /// upstream's CEL validation rules, which Kubernetes 1.25 and later check.
    Crds {
        /// Leave the CEL rules (`x-kubernetes-validations`) out, for API servers older than
        /// 1.25, which refuse them; there kgw's admission webhook validates instead.
        #[arg(long)]
        no_cel: bool,
    },
    /// Serve the httpbin-compatible sample backend alone.
    SampleBackend {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args, None).await,
            Command::Quickstart(args) => run::quickstart(args).await,
            Command::Apply { files, server } => client::apply(&server, &files).await,
            Command::Get {
                kind,
                name,
                namespace,
                all_namespaces,
                output,
                server,
            } => {
                let ns = (!all_namespaces).then_some(namespace);
                client::get(&server, &kind, name.as_deref(), ns.as_deref(), output.as_deref()).await
            }
            Command::Delete {
                kind,
                names,
                namespace,
                files,
                server,
            } => client::delete(&server, kind.as_deref(), &names, &namespace, &files).await,
            Command::Patch {
                kind,
                name,
                namespace,
                patch_type,
                patch,
                server,
            } => client::patch(&server, &kind, &name, &namespace, &patch_type, &patch).await,
            Command::SampleBackend { listen } => sample_backend::serve_forever(listen).await,
            Command::Crds { no_cel } => crds::print(if no_cel { crds::Cel::None } else { crds::Cel::Rules }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            if msg.starts_with("error") || msg.starts_with("Error") {
                eprintln!("{msg}");
            } else {
                eprintln!("error: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Where `kgw run` keeps applied objects when `--state-dir` is not given.
fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("kgw");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/kgw"),
        None => PathBuf::from(".kgw-state"),
    }
}

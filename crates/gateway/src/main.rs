//! The `code-interpreter` binary: parse the command line, set up, serve; or act as the sandbox helper or the zygote.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gateway::config::{Cli, Command, Config};
use gateway::token::{self, TokenSource};
use gateway::{kernel_env, telemetry};

fn main() -> ExitCode {
    // The sandbox helper: a fresh single-threaded process that applies a policy and becomes the kernel. Checked
    // before anything else so no thread or runtime exists yet.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "__sandbox-exec") {
        sandbox::exec_main();
    }
    // The zygote: likewise a fresh single-threaded process, which must stay single-threaded to fork.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "__zygote") {
        zygote::main();
    }
    // An upload's writer (`files::charged`): joins the sandbox's memory cgroup, copies stdin to stdout.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == gateway::files::WRITER_ARG) {
        let procs = std::env::args_os().nth(2).map(std::path::PathBuf::from);
        gateway::files::writer_main(procs.as_deref());
    }
    let cli = Cli::parse();
    telemetry::init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Not eprintln!, which panics if stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), &cli.settings)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token => {
            let (token, _) = token::load_or_create(&config.data_dir)?;
            println!("{token}");
            Ok(())
        }
        Command::Setup => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let env = runtime.block_on(kernel_env::ensure(&config.kernel_env_dir(), config.python.as_deref()))?;
            eprintln!("kernel environment ready at {}", env.root.display());
            Ok(())
        }
        Command::Serve => serve(config, cli.stop_on_stdin_eof),
    }
}

fn serve(config: Config, stop_on_stdin_eof: bool) -> anyhow::Result<()> {
    raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let served = runtime.block_on(async {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
        let env = kernel_env::ensure(&config.kernel_env_dir(), config.python.as_deref()).await?;
        let (token, source) = token::load_or_create(&config.data_dir)?;
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        match &source {
            TokenSource::Env => tracing::info!(target: "gateway", "the token is AUTH_TOKEN's"),
            TokenSource::File(path) => {
                tracing::info!(target: "gateway", file = %path.display(), "the token is in the token file")
            }
            TokenSource::Generated(path) => {
                tracing::info!(target: "gateway", file = %path.display(), %token, "generated a new token and stored it")
            }
        }
        // Printed whatever the log filter: people and supervisors (the test harness) read where it listens.
        eprintln!(
            "code-interpreter: serving on http://{}; the token is needed in X-Auth-Token (`code-interpreter token` \
             prints it)",
            listener.local_addr()?
        );
        gateway::run(config, env, token, listener, shutdown_signal(stop_on_stdin_eof)).await?;
        Ok(())
    });
    // A blocking read of stdin may still be pending; every sandbox is gone by now, so do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    served
}

/// Raises the soft limit on open files to the hard one: each session holds a few sockets and pipes, and the
/// common default of 1024 would cap the service at about 150 sessions. Kernels get their own limit.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(errno) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%errno, soft, hard, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(errno) => tracing::warn!(%errno, "cannot read the open files limit"),
    }
}

/// Resolves on SIGTERM or SIGINT, or when standard input closes if asked to watch it.
async fn shutdown_signal(stop_on_stdin_eof: bool) {
    use tokio::io::AsyncReadExt;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let stdin_closed = async {
        if !stop_on_stdin_eof {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(target: "gateway", "SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!(target: "gateway", "SIGINT: shutting down"),
        () = stdin_closed => tracing::info!(target: "gateway", "standard input closed: shutting down"),
    }
}

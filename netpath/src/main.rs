use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`netpath stats | head`) instead of failing on EPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // A CNI runtime runs its plugins with CNI_COMMAND set and the configuration on stdin.
    if std::env::var_os("CNI_COMMAND").is_some() {
        return netpath::frontend::cni::main();
    }
    match netpath::frontend::cli::run(netpath::frontend::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpath: {}", e.render(&netpath::frontend::cli::flag));
            ExitCode::from(e.exit_code())
        }
    }
}

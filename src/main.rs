//! The `authql` binary: parse the command line, start logging, dispatch into
//! the library (`authql::commands`), where everything else lives so tests
//! share it.

use std::ffi::OsString;
use std::process::ExitCode;

use authql::cli::{Cli, CliError, Command};
use authql::commands::{self, EXIT_SETTING};
use authql::telemetry;

/// Measured against the system allocator in bench/RESULTS.md: it keeps a
/// cached `me`'s latency lower while bcrypt threads allocate alongside.
/// Built not to ask for transparent huge pages (`no_thp` in Cargo.toml),
/// which cost resident memory and bought no throughput.
#[global_allocator]
static ALLOCATOR: authql::allocator::MiMalloc = authql::allocator::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_args(&args) {
        Ok(cli) => cli,
        Err(CliError::Setting(err)) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_SETTING);
        }
        Err(CliError::Clap(err)) => err.exit(),
    };
    telemetry::init(cli.command.log_format());
    let done = match cli.command {
        Command::Serve(args) => commands::serve(args).await,
        Command::Migrate { database, .. } => commands::migrate(&database).await,
        Command::User(command) => commands::user(command).await,
        Command::Schema => {
            print!("{}", commands::schema());
            Ok(())
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let (message, code) = commands::describe_failure(err, &args);
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

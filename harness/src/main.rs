//! The binary's edge: parse the arguments, run, print an error (each message names its cause
//! and the fix), exit with the status the library chose (`harness::Error::exit_code`).

use clap::Parser;

fn main() {
    let cli = harness::cli::Cli::parse();
    let code = match harness::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: {e}");
            code
        }
    };
    std::process::exit(code);
}

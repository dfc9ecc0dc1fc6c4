use clap::Parser;

fn main() {
    let cli = harness::cli::Cli::parse();
    let code = match harness::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

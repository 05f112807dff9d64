//! The `dts` command. Everything lives in [`cli`]; this only reports errors
//! and picks the exit code.

mod cli;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(error) => {
            // A message can quote the server, which quotes what a task's
            // submitter wrote: on a terminal, its control characters are
            // shown escaped (whatever --raw says).
            let mut stderr = cli::terminal::stderr(false);
            let _ = writeln!(stderr, "dts: error: {error}");
            for cause in error.chain().skip(1) {
                let _ = writeln!(stderr, "  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

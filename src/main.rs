//! The `tagfence` binary: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use tagfence::config::ConfigErrors;

fn main() -> ExitCode {
    // An app setting left empty means "use the default" (Bicep and the portal often create
    // settings with empty values); clap would instead try to parse the empty string. This runs
    // before any other thread exists, so changing the environment is sound.
    for (name, value) in std::env::vars_os() {
        if value.is_empty() && name.to_string_lossy().starts_with("TAGFENCE_") {
            std::env::remove_var(name);
        }
    }
    let invocation = tagfence::cli::Invocation::from_env();
    match tagfence::cli::run(invocation) {
        Ok(code) => code,
        Err(err) => {
            match err.downcast_ref::<ConfigErrors>() {
                // Every configuration problem on its own line, after what was being done:
                // "reading the configuration: TAGFENCE_MAX_RULES=lots: expected …".
                Some(problems) => {
                    for problem in problems.lines() {
                        eprintln!("tagfence: error: {err}: {problem}");
                    }
                }
                // The whole chain on one line: "planning the firewall change: unknown service
                // tag …".
                None => eprintln!("tagfence: error: {err:#}"),
            }
            ExitCode::from(2)
        }
    }
}

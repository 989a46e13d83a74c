//! `tidegate exec-pod -- PROGRAM ARGS…` (hidden): how the local runtime starts a pod.
//!
//! Asks the kernel to SIGKILL this process when the gateway dies (even by `kill -9`), then
//! replaces itself with the pod's program; the death signal survives `exec`. So no pod outlives
//! its gateway.

use std::ffi::CString;
use std::process::ExitCode;

use nix::sys::signal::Signal;

/// Exit code when the program cannot be started (as shells use for "not found").
const EXIT_NOT_FOUND: u8 = 127;

pub fn run(parent: Option<u32>, argv: &[String]) -> ExitCode {
    let Some(program) = argv.first() else {
        eprintln!("exec-pod: no program given");
        return ExitCode::from(EXIT_NOT_FOUND);
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("exec-pod: cannot tie the pod to the gateway: {e}");
    }
    // The gateway may have died between fork and prctl; then the signal never comes.
    if let Some(parent) = parent
        && nix::unistd::getppid().as_raw() != i32::try_from(parent).unwrap_or(-1)
    {
        return ExitCode::from(EXIT_NOT_FOUND);
    }
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let (Ok(args), Ok(file)) = (args, CString::new(program.as_bytes())) else {
        eprintln!("exec-pod: arguments must not contain NUL bytes");
        return ExitCode::from(EXIT_NOT_FOUND);
    };
    // Only returns on failure.
    let error = nix::unistd::execvp(&file, &args).err();
    eprintln!(
        "exec-pod: cannot run {program}: {}",
        error.map_or_else(String::new, |e| e.desc().to_owned())
    );
    ExitCode::from(EXIT_NOT_FOUND)
}

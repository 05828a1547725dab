//! Running helper programs (`iptables*`, `ip`) and turning failures into [`InitError`]s.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::InitError;

/// Runs `program args`, feeding `stdin` if given; returns stdout, or an error carrying stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
    let spawn_err = |source| InitError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn_err)?;
        // Dropping the pipe closes it, so the program sees the end of its input.
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(InitError::Command {
            program: program.to_string(),
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

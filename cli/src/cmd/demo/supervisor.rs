//! The demo's process supervisor: starts the mesh's pieces as child processes of this same `halyard`
//! executable, captures their output in a log directory, waits for each to be ready, and stops them all (their
//! whole process groups) when the demo ends, fails, or is interrupted.
//!
//! Children get a pipe as standard input and run with `--exit-with-parent`: if this process dies without
//! cleaning up (even from SIGKILL), the pipe closes and they exit on their own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, Command};

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

struct Proc {
    name: String,
    child: Child,
    /// Held open for the child's lifetime; dropping it tells a child started with `--exit-with-parent` to exit.
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

pub struct Supervisor {
    exe: PathBuf,
    log_dir: PathBuf,
    procs: Vec<Proc>,
}

impl Supervisor {
    /// A supervisor whose children are `exe` and whose logs go to `log_dir` (created if missing).
    pub fn new(exe: PathBuf, log_dir: PathBuf) -> anyhow::Result<Supervisor> {
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating the log directory {}", log_dir.display()))?;
        Ok(Supervisor {
            exe,
            log_dir,
            procs: Vec::new(),
        })
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Start `halyard <args>` as child `name`, its stdout and stderr going to `<log_dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        let log = self.log_dir.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Logs go to files and are quoted in the demo's errors: no terminal colour codes.
            .env("NO_COLOR", "1")
            // Its own process group: Ctrl-C in the terminal reaches only the demo, which then stops the
            // children in order and reports; and the stop signal reaches anything a child started.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| {
            format!("starting {name}: {} {}", self.exe.display(), args.join(" "))
        })?;
        let stdin = child.stdin.take();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            stdin,
            log,
        });
        Ok(())
    }

    /// Poll `probe` until it succeeds, failing when `timeout` passes or when child `name` exits first.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        name: &str,
        timeout: Duration,
        mut probe: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(p) = self.procs.iter_mut().find(|p| p.name == name)
                && let Ok(Some(status)) = p.child.try_wait()
            {
                bail!(
                    "{name} exited ({status}) before becoming ready; its log {}:\n{}",
                    p.log.display(),
                    tail(&p.log, 15)
                );
            }
            match probe().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                let log = self
                    .procs
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.log.clone());
                let detail = log
                    .map(|l| format!("; its log {}:\n{}", l.display(), tail(&l, 15)))
                    .unwrap_or_default();
                bail!("{name} not ready after {timeout:?}: {last}{detail}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Names of children that have exited, with their status (a healthy mesh has none).
    pub fn exited(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} ({status}, log {})", p.name, p.log.display())),
                _ => None,
            })
            .collect()
    }

    /// Stop every child: SIGTERM to its process group, then SIGKILL after a grace period. Children are stopped
    /// in reverse start order so that proxies go before the control plane they are connected to.
    pub async fn shutdown(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stdin = None;
            if let Some(pid) = p.child.id()
                && let Ok(pid) = i32::try_from(pid)
            {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for p in self.procs.iter_mut().rev() {
            match tokio::time::timeout_at(deadline, p.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    if let Some(pid) = p.child.id()
                        && let Ok(pid) = i32::try_from(pid)
                    {
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    let _ = p.child.kill().await;
                }
            }
        }
        self.procs.clear();
    }
}

/// The last `n` lines of a log file, indented (or why it could not be read).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..]
                .iter()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

/// Resolves when standard input reaches end of file or fails: the demo process that started us is gone.
pub async fn parent_gone() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.log");
        std::fs::write(&f, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&f, 2), "    b\n    c");
        assert!(tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }

    #[tokio::test]
    async fn stops_children_and_reports_early_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new("/bin/sh".into(), dir.path().join("logs")).unwrap();
        sup.spawn(
            "sleeper",
            &["-c".into(), "echo started; exec sleep 30".into()],
        )
        .unwrap();
        sup.spawn("quitter", &["-c".into(), "echo bye; exit 3".into()])
            .unwrap();
        let err = sup
            .wait_ready("quitter", Duration::from_secs(5), || async {
                Err("never".to_string())
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("quitter exited"), "{err}");
        assert!(err.contains("bye"), "{err}");
        let started = Instant::now();
        sup.shutdown().await;
        assert!(started.elapsed() < STOP_GRACE + Duration::from_secs(1));
        assert!(sup.exited().is_empty());
    }
}

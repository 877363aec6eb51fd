//! Running one measured command: wall time and peak RSS of exactly that command.
//!
//! The peak RSS of one child is read with `getrusage(RUSAGE_CHILDREN)`, which only covers
//! children already waited for; to get it per command, every measured command runs under a
//! fresh copy of this program (`xtask bench --exec-child RESULT -- ARGV…`) whose only child it
//! is. That helper times spawn-to-exit itself (so its own start-up is not counted), writes
//! `nanoseconds max_rss_kib exit_code` to RESULT and exits with the child's status.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bench_stats::Sample;

/// A command to measure: its argv and extra environment.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
}

impl Cmd {
    /// `program args…`.
    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    /// The argv of an existing [`Command`] (its program and arguments; no environment).
    pub fn from_command(command: &Command) -> Cmd {
        let mut argv = vec![command.get_program().to_os_string()];
        argv.extend(command.get_args().map(OsString::from));
        Cmd {
            argv,
            env: Vec::new(),
        }
    }

    /// `sh -c script`.
    pub fn shell(script: &str) -> Cmd {
        Cmd::new(["sh", "-c", script])
    }

    /// Appends arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line as a shell would read it (for the report).
    pub fn display(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.env {
            out.push_str(&format!(
                "{}={} ",
                k.to_string_lossy(),
                shell_quote(&v.to_string_lossy())
            ));
        }
        let words: Vec<String> = self
            .argv
            .iter()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect();
        out.push_str(&words.join(" "));
        out
    }

    /// Runs it (not measured) and returns its stderr, whatever its exit status.
    pub fn run_with_stderr(&self) -> Result<String> {
        let (program, args) = self.argv.split_first().context("empty command")?;
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting {}", self.display()))?;
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Runs it (not measured), failing with its stderr when it fails; returns its stdout.
    pub fn run(&self) -> Result<Vec<u8>> {
        let (program, args) = self.argv.split_first().context("empty command")?;
        let out = Command::new(program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting {}", self.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.display(),
                out.status,
                tail(&out.stderr)
            );
        }
        Ok(out.stdout)
    }
}

/// Quotes a word for sh when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%[]".contains(c) || (c as u32) > 127);
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Runs commands under the measuring helper.
#[derive(Debug)]
pub struct Runner {
    helper: PathBuf,
    result_file: PathBuf,
}

impl Runner {
    /// A runner whose helper is this executable; `scratch` holds the result file.
    pub fn new(scratch: &Path) -> Result<Runner> {
        Ok(Runner {
            helper: std::env::current_exe().context("finding the xtask executable")?,
            result_file: scratch.join("exec-result"),
        })
    }

    /// Runs `cmd` once, measured; fails (with its stderr) when it fails. Returns the sample
    /// and the command's stdout.
    pub fn measure(&self, cmd: &Cmd) -> Result<(Sample, Vec<u8>)> {
        let _ = std::fs::remove_file(&self.result_file);
        let out = Command::new(&self.helper)
            .arg("bench")
            .arg("--exec-child")
            .arg(&self.result_file)
            .arg("--")
            .args(&cmd.argv)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting the measuring helper for {}", cmd.display()))?;
        let result = std::fs::read_to_string(&self.result_file).with_context(|| {
            format!(
                "{} left no result ({}): {}",
                cmd.display(),
                out.status,
                tail(&out.stderr)
            )
        })?;
        let sample = parse_result(&result)
            .with_context(|| format!("helper result {result:?} of {}", cmd.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                cmd.display(),
                out.status,
                tail(&out.stderr)
            );
        }
        Ok((sample, out.stdout))
    }
}

/// Parses the helper's `nanoseconds max_rss_kib exit_code` line.
fn parse_result(text: &str) -> Result<Sample> {
    let mut words = text.split_whitespace();
    let nanos: u128 = words.next().context("no time")?.parse()?;
    let rss: u64 = words.next().context("no RSS")?.parse()?;
    Ok(Sample {
        wall_ms: nanos as f64 / 1e6,
        max_rss_kib: rss,
    })
}

/// The helper side: `--exec-child RESULT -- ARGV…`. Runs ARGV with inherited stdio, writes
/// the result line, and exits with ARGV's status.
pub fn exec_child(args: &[String]) -> Result<()> {
    let (result, rest) = args.split_first().context("--exec-child needs RESULT")?;
    let argv = match rest.split_first() {
        Some((dashes, argv)) if dashes == "--" => argv,
        _ => rest,
    };
    let (program, program_args) = argv.split_first().context("--exec-child needs a command")?;
    let start = Instant::now();
    let status = Command::new(program)
        .args(program_args)
        .status()
        .with_context(|| format!("starting {program}"))?;
    let elapsed = start.elapsed();
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .context("getrusage(RUSAGE_CHILDREN)")?;
    let code = status.code().unwrap_or(128);
    std::fs::write(
        result,
        format!("{} {} {code}\n", elapsed.as_nanos(), usage.max_rss()),
    )
    .with_context(|| format!("writing {result}"))?;
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_results_and_quoting() {
        let s = parse_result("1500000 2048 0\n").unwrap();
        assert_eq!((s.wall_ms, s.max_rss_kib), (1.5, 2048));
        assert!(parse_result("x 1 0").is_err());
        assert!(parse_result("").is_err());
        assert_eq!(shell_quote("/dev/shm/a+b"), "/dev/shm/a+b");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let cmd = Cmd::shell("gzip -dc x | tar -x");
        assert_eq!(cmd.display(), "sh -c 'gzip -dc x | tar -x'");
    }
}

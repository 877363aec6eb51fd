//! Named crash points for crash-injection tests (`cargo xtask crash`): [`crash_point`] kills
//! the process with SIGKILL when the environment asks for that point, and is a cheap no-op
//! otherwise.
//!
//! - `PODSTORE_CRASH_AT=<name>` kills at the first time `<name>` is reached;
//!   `PODSTORE_CRASH_AT=<name>:<n>` at the `n`-th time (counting from 1).
//! - `PODSTORE_CRASH_TRACE=<file>` appends one line per point reached (`<name>`), so a test
//!   can list the points an operation passes before choosing where to kill it.
//!
//! The variables are read once per process. With neither set, a crash point costs one atomic
//! load after the first call.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable naming the point (and occurrence) to kill the process at.
pub const CRASH_AT_ENV: &str = "PODSTORE_CRASH_AT";
/// Environment variable naming a file that receives one line per crash point reached.
pub const CRASH_TRACE_ENV: &str = "PODSTORE_CRASH_TRACE";

struct Armed {
    name: Option<String>,
    occurrence: u64,
    trace: Option<std::path::PathBuf>,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> Option<&'static Armed> {
    ARMED
        .get_or_init(|| {
            let at = std::env::var(CRASH_AT_ENV).ok().filter(|s| !s.is_empty());
            let trace = std::env::var_os(CRASH_TRACE_ENV)
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from);
            if at.is_none() && trace.is_none() {
                return None;
            }
            let (name, occurrence) = match at {
                Some(at) => match at.rsplit_once(':') {
                    Some((name, n)) if n.parse::<u64>().is_ok_and(|n| n > 0) => {
                        (Some(name.to_owned()), n.parse().unwrap_or(1))
                    }
                    _ => (Some(at), 1),
                },
                None => (None, 1),
            };
            Some(Armed {
                name,
                occurrence,
                trace,
            })
        })
        .as_ref()
}

/// Marks a named point of an operation (`ingest-committed`, `apply-mid`, `save-before`,
/// `save-after`, `rename-mid`, …). Kills the process with SIGKILL if `PODSTORE_CRASH_AT`
/// names this point and occurrence; records the point if `PODSTORE_CRASH_TRACE` is set.
pub fn crash_point(name: &str) {
    let Some(armed) = armed() else {
        return;
    };
    if let Some(trace) = &armed.trace
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(trace)
    {
        let _ = writeln!(f, "{name}");
    }
    if armed.name.as_deref() == Some(name)
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == armed.occurrence
    {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; should it somehow not be delivered, stop anyway.
        std::process::abort();
    }
}

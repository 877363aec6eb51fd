//! The `podstore` command line: operators' access to the image and runtime services.
//!
//! Not built yet: see issues 6 and 7. Today it only reports its version.

fn main() -> anyhow::Result<()> {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => {
            println!("podstore {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        _ => anyhow::bail!("podstore: no commands are implemented yet (see issues 6 and 7)"),
    }
}

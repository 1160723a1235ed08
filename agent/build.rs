//! Links the agent as a position-dependent executable on glibc Linux.
//!
//! A position-independent agent carries about 70,000 relative relocations (1.6 MiB of
//! `.rela.dyn`) that the dynamic loader reads and applies at every start, and applying them
//! dirties the whole of `.data.rel.ro`: about 2.6 MiB of an idle agent's 15 MiB resident set
//! that does nothing after start-up. Without PIE the linker resolves them once. See
//! docs/decisions.md, "The agent is linked without PIE".

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

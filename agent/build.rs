//! Links the agent as a position-dependent executable on glibc Linux.
//!
//! A position-independent agent carries about 70,000 relative relocations (1.6 MiB of
//! `.rela.dyn`) that the dynamic loader reads and applies at every start, and applying them
//! turns the whole of `.data.rel.ro` into private copies (1 MiB). Without PIE the linker
//! resolves them once: an idle release agent holds about 1 MiB less (12.6-13.1 MiB resident
//! instead of 13.6-14.5). See docs/decisions.md, "The agent is linked without PIE".

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // A static glibc build (`+crt-static`) is linked `-static-pie`, which `-no-pie` contradicts.
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if os == "linux" && env == "gnu" && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

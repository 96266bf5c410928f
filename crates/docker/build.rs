// The agent's build target triple starts with the architecture this crate is built for.
fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    println!("cargo:rustc-env=STOCKADE_BUILD_ARCH={arch}");
}

//! Embeds the web UI: every file under `ui/` (but its tests, npm files and node_modules) and the
//! third-party terminal, xterm.js with its fit addon, from `ui/node_modules` after
//! `npm ci --prefix crates/server/ui`. Without node_modules a stub stands in for xterm.js that
//! says how to get it, so `cargo build` on a fresh clone still works. Writes
//! `$OUT_DIR/ui_assets.rs`: a table of (URL path under /ui/, content type, bytes).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (path under /ui/vendor/, file under ui/node_modules)
const VENDOR: [(&str, &str); 3] = [
    ("xterm.mjs", "@xterm/xterm/lib/xterm.mjs"),
    ("xterm.css", "@xterm/xterm/css/xterm.css"),
    ("addon-fit.mjs", "@xterm/addon-fit/lib/addon-fit.mjs"),
];

const MISSING: &str = "terminal assets missing: run `npm ci --prefix crates/server/ui`";

/// Not served: what only development and tests use.
const SKIP: [&str; 4] = ["node_modules", "tests", "package.json", "package-lock.json"];

fn stub(file: &str) -> String {
    match file {
        "xterm.mjs" => format!(
            "// Stand-in: xterm.js was not installed when stockade was built.\n\
             export const missing = {MISSING:?};\n\
             const none = {{ dispose() {{}} }};\n\
             export class Terminal {{\n\
             \x20 constructor() {{ this.cols = 80; this.rows = 24; this.options = {{}}; }}\n\
             \x20 open(el) {{ el.textContent = missing; el.classList.add(\"term-missing\"); }}\n\
             \x20 loadAddon() {{}} onData() {{ return none; }} onResize() {{ return none; }}\n\
             \x20 write() {{}} writeln() {{}} reset() {{}} focus() {{}} dispose() {{}}\n\
             }}\n"
        ),
        "addon-fit.mjs" => "export class FitAddon { fit() {} activate() {} dispose() {} }\n".into(),
        _ => "/* xterm.js is missing */\n".into(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || (rel.is_empty() && SKIP.contains(&name.as_str())) {
            continue;
        }
        let path = entry.path();
        let url = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if entry.file_type()?.is_dir() {
            walk(&path, &url, out)?;
        } else {
            out.push((url, path));
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    // A directory is watched whole: editing the UI or installing node_modules reruns this.
    println!("cargo:rerun-if-changed=ui");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let ui = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("ui");
    let mut files = Vec::new();
    walk(&ui, "", &mut files)?;

    let modules = ui.join("node_modules");
    let have = VENDOR.iter().all(|(_, src)| modules.join(src).is_file());
    if !have {
        println!("cargo:warning=the web UI's terminal is a stub: {MISSING}");
    }
    std::fs::create_dir_all(out.join("vendor"))?;
    for (name, src) in VENDOR {
        let text = if have {
            std::fs::read_to_string(modules.join(src))?
        } else {
            stub(name)
        };
        // Source maps are not embedded: a browser would ask for them in vain.
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("//# sourceMappingURL=") && !l.starts_with("/*# sourceMappingURL="))
            .map(|l| format!("{l}\n"))
            .collect();
        let path = out.join("vendor").join(name);
        std::fs::write(&path, text)?;
        files.push((format!("vendor/{name}"), path));
    }

    let mut table = String::from("&[\n");
    for (url, path) in &files {
        let _ = writeln!(
            table,
            "    ({url:?}, {:?}, include_bytes!({:?}) as &[u8]),",
            content_type(url),
            path.display().to_string()
        );
    }
    table.push(']');
    std::fs::write(out.join("ui_assets.rs"), table)
}

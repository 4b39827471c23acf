//! Build script: compile the kernel side (C, CO-RE) into `$OUT_DIR/flow.bpf.o`,
//! and measure the layout of the ABI header `flow.h` for the `abi` layout test.
//!
//! Needs `clang` (BPF target) and the libbpf headers: on Debian,
//! `apt-get install clang libbpf-dev`.
//!
//! Layout check: `abi_layout.c` includes `flow.h` and prints `sizeof`/`offsetof`
//! of every ABI struct and the value of every ABI constant as Rust source
//! (`$OUT_DIR/abi_layout.rs`), which `src/abi.rs` compares with its
//! `#[repr(C)]` mirrors. The same values are then asserted with
//! `_Static_assert` while compiling for `-target bpf`, so the host layout, the
//! BPF layout and the Rust layout are all the same.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{exit, Command, Output};

const INSTALL_HINT: &str = "install clang and libbpf-dev (Debian/Ubuntu: `apt-get install clang libbpf-dev`), or point $CLANG at a clang with the BPF target";

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo::warning={msg}");
    exit(1);
}

fn run(cmd: &mut Command, what: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fail(&format!("{what}: `{}` not found: {INSTALL_HINT}", cmd.get_program().to_string_lossy()))
        }
        Err(e) => fail(&format!("{what}: cannot run {cmd:?}: {e}")),
    }
}

fn check(out: Output, what: &str) -> Output {
    if out.status.success() {
        return out;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let missing_header =
        stderr.contains("file not found") && ["'bpf/", "'linux/", "'asm/"].iter().any(|h| stderr.contains(h));
    let hint = if missing_header {
        format!("\nkernel/BPF headers are missing: {INSTALL_HINT} (linux-libc-dev provides linux/ and asm/)")
    } else if stderr.contains("No available targets") || stderr.contains("unknown target") {
        format!("\nthis clang cannot target BPF: {INSTALL_HINT}")
    } else {
        String::new()
    };
    fail(&format!("{what} failed ({}):\n{stderr}{hint}", out.status))
}

/// `/usr/include/<multiarch>` holds `asm/types.h`, which `linux/types.h` needs;
/// `-target bpf` does not search it by itself.
fn multiarch_include(clang: &str) -> Option<PathBuf> {
    let out = Command::new(clang).arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let candidates = [
        (!triple.is_empty()).then(|| PathBuf::from(format!("/usr/include/{triple}"))),
        env::var("TARGET").ok().map(|t| PathBuf::from(format!("/usr/include/{}", t.replace("-unknown", "")))),
    ];
    candidates.into_iter().flatten().find(|p| p.join("asm/types.h").exists())
}

fn bpf_target_arch() -> &'static str {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok("riscv64") => "riscv",
        Ok("s390x") => "s390",
        Ok("powerpc64") => "powerpc",
        _ => "x86",
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let out_dir = match env::var("OUT_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => fail("OUT_DIR is not set (run through cargo)"),
    };
    let ebpf_dir = manifest.join("../exporter-ebpf");
    let src = ebpf_dir.join("flow.bpf.c");
    let layout_src = manifest.join("abi_layout.c");
    for p in [&src, &ebpf_dir.join("flow.h"), &ebpf_dir.join("kernel_types.h"), &layout_src] {
        println!("cargo::rerun-if-changed={}", p.display());
    }
    println!("cargo::rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    // Fails early with the install hint when clang is missing.
    check(run(Command::new(&clang).arg("--version"), "clang --version"), "clang --version");
    let mut includes: Vec<PathBuf> = vec![ebpf_dir.clone()];
    includes.extend(multiarch_include(&clang));

    // 1. The eBPF object.
    let obj = out_dir.join("flow.bpf.o");
    let mut cmd = Command::new(&clang);
    cmd.args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"]).arg(format!("-D__TARGET_ARCH_{}", bpf_target_arch()));
    for inc in &includes {
        cmd.arg("-I").arg(inc);
    }
    cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
    check(run(&mut cmd, "compiling flow.bpf.c"), "compiling flow.bpf.c");

    // 2. The layout of flow.h as the host C compiler sees it.
    let layout_bin = out_dir.join("abi_layout");
    let mut cmd = Command::new(&clang);
    cmd.args(["-O0", "-Wall", "-Werror"]);
    for inc in &includes {
        cmd.arg("-I").arg(inc);
    }
    cmd.arg(&layout_src).arg("-o").arg(&layout_bin);
    check(run(&mut cmd, "compiling abi_layout.c"), "compiling abi_layout.c");
    let out = check(run(&mut Command::new(&layout_bin), "running abi_layout"), "running abi_layout");
    let rust = String::from_utf8_lossy(&out.stdout).into_owned();
    write(&out_dir.join("abi_layout.rs"), &rust);

    // 3. The same numbers must hold for the BPF target.
    let asserts = static_asserts(&rust);
    let assert_src = out_dir.join("abi_layout_bpf.c");
    write(&assert_src, &asserts);
    let mut cmd = Command::new(&clang);
    cmd.args(["-target", "bpf", "-fsyntax-only", "-Wall", "-Werror"]);
    for inc in &includes {
        cmd.arg("-I").arg(inc);
    }
    cmd.arg(&assert_src);
    check(run(&mut cmd, "checking flow.h layout for the BPF target"), "checking flow.h layout for the BPF target");
}

fn write(path: &Path, text: &str) {
    if let Err(e) = fs::write(path, text) {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
}

/// Turn the `("struct", "field", offset, size)` and `("struct", size)` lines
/// printed by abi_layout.c into `_Static_assert`s.
fn static_asserts(rust: &str) -> String {
    let mut c = String::from("#include <linux/types.h>\n#include <stddef.h>\n#include \"flow.h\"\n");
    for line in rust.lines() {
        let line = line.trim().trim_end_matches(',');
        let Some(inner) = line.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
            continue;
        };
        let parts: Vec<&str> = inner.split(',').map(|p| p.trim().trim_matches('"')).collect();
        match parts.as_slice() {
            [s, f, off, size] => c.push_str(&format!(
                "_Static_assert(offsetof(struct {s}, {f}) == {off} && sizeof(((struct {s} *)0)->{f}) == {size}, \"{s}.{f}\");\n"
            )),
            [name, value] if value.parse::<u64>().is_ok() => {
                if name.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_') {
                    c.push_str(&format!(
                        "_Static_assert(sizeof(struct {name}) == {value}, \"sizeof {name}\");\n"
                    ));
                } else {
                    c.push_str(&format!("_Static_assert({name} == {value}, \"{name}\");\n"));
                }
            }
            _ => {}
        }
    }
    c
}

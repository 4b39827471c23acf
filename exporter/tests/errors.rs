//! Load errors against the real kernel: without privilege the error must say
//! what is missing. The unprivileged load runs in a child process (this test
//! binary again) whose capabilities are dropped with `setpriv`.

use std::process::Command;

const CHILD_ENV: &str = "FLOWMAP_UNPRIVILEGED_CHILD";

/// In the child: try to load and print the error. In a normal run: no-op.
#[test]
fn child_load_without_capabilities() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    match flowmap_exporter::load(&flowmap_exporter::LoaderConfig::default()) {
        Ok(_) => println!("RESULT: loaded"),
        Err(e) => println!(
            "RESULT: {}: {e}",
            match e {
                flowmap_exporter::LoadError::Privilege { .. } => "privilege",
                _ => "other",
            }
        ),
    }
}

#[test]
fn unprivileged_load_names_the_missing_privilege() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: setpriv (util-linux) is not installed");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked",
        ])
        .arg(&exe)
        .args(["--exact", "child_load_without_capabilities", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESULT: ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("child printed no result:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(line.starts_with("RESULT: privilege: "), "{line}");
    assert!(line.contains("CAP_BPF") && line.contains("root"), "{line}");
}

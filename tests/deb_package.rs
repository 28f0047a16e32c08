//! The Debian package, built and installed for real: cargo-deb packages the binary this
//! test suite built (a dev-profile build, passed with `--no-build`: building a release
//! binary again would take minutes), `dpkg -i` installs it, `provhost --version`,
//! `provhost check` (reading /etc/provhost/provhost.toml, scripts from
//! /usr/share/provhost), `provhost init --dir` and — where /var/lib/provhost is empty —
//! `provhost init` on the packaged layout run from the installed paths, and
//! `dpkg --purge` removes it again — also when an assertion fails — leaving the machine as
//! it was. Needs root, dpkg and cargo-deb (`tools/install-deps.sh` installs it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PACKAGE: &str = "provhost";
const DATA: &str = "/var/lib/provhost";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]))
        .stdout
        .starts_with(b"install ok installed")
}

/// Purges the package on drop and puts back the folders that existed before, so a failed
/// assertion leaves the machine as it was.
struct Installed {
    had: Vec<(PathBuf, u32)>,
    /// /var/lib/provhost was absent or empty before: what the test's `provhost init` put
    /// there is removed again.
    clear_data: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.clear_data {
            if let Ok(entries) = std::fs::read_dir(DATA) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
        let out = run(Command::new("dpkg").args(["--purge", PACKAGE]));
        if !out.status.success() {
            eprintln!("dpkg --purge {PACKAGE} failed: {}", text(&out));
        }
        for (dir, mode) in &self.had {
            if !dir.exists() {
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode));
            }
        }
    }
}

/// The binary of this build laid out where cargo-deb expects a profile's output
/// (`<target dir>/release/`), with the completions the package ships.
fn stage(dir: &Path) {
    let release = dir.join("release");
    std::fs::create_dir_all(release.join("completions")).expect("mkdir");
    std::fs::copy(env!("CARGO_BIN_EXE_provhost"), release.join("provhost")).expect("copy binary");
    for (shell, file) in [
        ("bash", "provhost"),
        ("zsh", "_provhost"),
        ("fish", "provhost.fish"),
    ] {
        let out = run(Command::new(env!("CARGO_BIN_EXE_provhost")).args(["completions", shell]));
        assert!(out.status.success(), "{}", text(&out));
        std::fs::write(release.join("completions").join(file), &out.stdout).expect("write");
    }
}

#[test]
fn the_deb_installs_runs_check_and_init_from_the_installed_paths_and_purges_clean() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "installing a .deb needs root (run the test suite as root, as CI does)"
    );
    let v = run(Command::new("cargo").args(["deb", "--version"]));
    assert!(
        v.status.success(),
        "cargo-deb is not installed: run tools/install-deps.sh (it runs `cargo install --locked cargo-deb`)\n{}",
        text(&v)
    );
    assert!(
        !installed(),
        "a {PACKAGE} package is already installed on this machine; this test installs and purges one, so it refuses to touch it (dpkg --purge {PACKAGE} first)"
    );

    // Build the .deb from this build's binary.
    let staging = tempfile::tempdir().expect("tempdir");
    stage(staging.path());
    let out_dir = staging.path().join("out");
    let started = std::time::Instant::now();
    let built = run(Command::new("cargo")
        .args(["deb", "--no-build", "--fast", "--output"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", staging.path())
        .current_dir(root()));
    assert!(built.status.success(), "cargo deb: {}", text(&built));
    let deb = std::fs::read_dir(&out_dir)
        .expect("output folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}: {}", out_dir.display(), text(&built)));
    eprintln!(
        "built {} ({} KB) in {:.1} s",
        deb.display(),
        std::fs::metadata(&deb).expect("stat").len() / 1024,
        started.elapsed().as_secs_f64()
    );

    // What it holds, before installing anything.
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let listing = String::from_utf8_lossy(&contents.stdout).into_owned();
    for path in [
        "./usr/bin/provhost",
        "./usr/share/provhost/scripts/provisioning/qemu.rhai",
        "./usr/share/provhost/scripts/os/linux.rhai",
        "./usr/share/provhost/stdlib/vmimage.rhai",
        "./lib/systemd/system/provhost.service",
        "./etc/provhost/provhost.toml",
        "./usr/share/bash-completion/completions/provhost",
        "./usr/share/zsh/vendor-completions/_provhost",
        "./usr/share/fish/vendor_completions.d/provhost.fish",
        "./usr/share/doc/provhost/docs/install.md",
    ] {
        assert!(
            listing.contains(path),
            "{path} not in the package:\n{listing}"
        );
    }

    // Install it; from here on the guard purges it whatever happens.
    let had: Vec<(PathBuf, u32)> = ["/etc/provhost", "/var/lib/provhost"]
        .iter()
        .filter_map(|d| {
            std::fs::metadata(d)
                .ok()
                .map(|m| (PathBuf::from(d), m.permissions().mode() & 0o7777))
        })
        .collect();
    let clear_data = std::fs::read_dir(DATA).map_or(true, |mut d| d.next().is_none());
    let guard = Installed {
        had: had.clone(),
        clear_data,
    };
    let out = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    assert!(installed());
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/provhost/provhost.toml"),
        "the configuration is a conffile: {}",
        text(&conffiles)
    );
    let data = std::fs::metadata("/var/lib/provhost").expect("the data folder exists");
    assert_eq!(data.permissions().mode() & 0o777, 0o700, "data folder mode");

    // Run from the installed paths, in a folder without a provhost.toml: the packaged
    // configuration is found by itself.
    let cwd = tempfile::tempdir().expect("tempdir");
    let installed_bin = |args: &[&str]| {
        run(Command::new("/usr/bin/provhost")
            .args(args)
            .current_dir(cwd.path())
            .env_remove("PROVHOST_CONFIG")
            .env_remove("PROVHOST_DATABASE_URL"))
    };
    let out = installed_bin(&["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("provhost {}", env!("CARGO_PKG_VERSION"))
    );
    let out = installed_bin(&["check"]);
    let shown = text(&out);
    assert!(out.status.success(), "provhost check: {shown}");
    assert!(
        shown.contains("ok     /usr/share/provhost/scripts/provisioning/qemu.rhai"),
        "{shown}"
    );
    assert!(shown.contains(" 0 error(s)"), "{shown}");

    // ./provhost.toml comes before /etc/provhost/provhost.toml: a folder with its own
    // file (scripts: one broken module) is checked instead of the packaged scripts.
    let local = cwd.path().join("local");
    std::fs::create_dir_all(local.join("scripts/os")).expect("mkdir");
    std::fs::write(
        local.join("scripts/os/broken.rhai"),
        "const MODULE = #{ kind: \"os\", name: \"broken\", version: \"1\" };\nfn post_load(ctx) {\n",
    )
    .expect("write");
    std::fs::write(
        local.join("provhost.toml"),
        "[paths]\nscripts = \"scripts\"\n",
    )
    .expect("write");
    let out = run(Command::new("/usr/bin/provhost")
        .arg("check")
        .current_dir(&local)
        .env_remove("PROVHOST_CONFIG"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("broken.rhai") && !said.contains("/usr/share/provhost"),
        "{said}"
    );

    // `init --dir` with the installed binary points the new node at the packaged scripts.
    let node = cwd.path().join("node");
    let node_s = node.to_string_lossy().into_owned();
    let out = installed_bin(&["init", "--dir", &node_s]);
    assert!(out.status.success(), "provhost init: {}", text(&out));
    let cfg = std::fs::read_to_string(node.join("provhost.toml")).expect("config");
    assert!(
        cfg.contains("scripts = \"/usr/share/provhost/scripts\""),
        "{cfg}"
    );
    let cfg_s = node.join("provhost.toml").to_string_lossy().into_owned();
    let out = installed_bin(&["--config", &cfg_s, "check"]);
    assert!(
        out.status.success(),
        "check with init's config: {}",
        text(&out)
    );

    // `sudo provhost init` on the packaged layout: the key and the database in
    // /var/lib/provhost — only where that folder held nothing before (an operator's data
    // is never touched, nor removed afterwards).
    if clear_data {
        let out = installed_bin(&["init"]);
        let said = text(&out);
        assert!(out.status.success(), "provhost init: {said}");
        assert!(
            said.contains("exists   /etc/provhost/provhost.toml  configuration"),
            "{said}"
        );
        assert!(
            said.contains("created  /var/lib/provhost/ssh/id_ed25519"),
            "{said}"
        );
        assert!(
            said.contains("created  /var/lib/provhost/provhost.db  SQLite database"),
            "{said}"
        );
        let key = Path::new("/var/lib/provhost/ssh/id_ed25519");
        assert_eq!(
            std::fs::metadata(key).expect("key").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata("/var/lib/provhost/ssh")
                .expect("ssh dir")
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let out = installed_bin(&["init"]);
        assert!(
            out.status.success() && text(&out).contains("nothing to do"),
            "second init: {}",
            text(&out)
        );
        let out = installed_bin(&["node", "list"]);
        assert!(
            out.status.success(),
            "node list on the packaged database: {}",
            text(&out)
        );
    } else {
        eprintln!("{DATA} holds files: the packaged `provhost init` was not run (nothing there is touched)");
    }

    // The unit is valid for this machine's systemd (when systemd-analyze is here).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/provhost.service"]));
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            text(&out)
        );
    } else {
        eprintln!("systemd-analyze not installed: the unit file was not verified");
    }

    // Remove it: nothing of it is left, the folders that were there before are back.
    drop(guard);
    assert!(!installed(), "still installed after the purge");
    assert!(!Path::new("/usr/bin/provhost").exists());
    assert!(!Path::new("/lib/systemd/system/provhost.service").exists());
    assert!(!Path::new("/usr/share/provhost").exists());
    for d in ["/etc/provhost", "/var/lib/provhost"] {
        let before = had.iter().any(|(p, _)| p == Path::new(d));
        assert_eq!(
            Path::new(d).exists(),
            before,
            "{d}: there after the purge exactly when it was there before"
        );
    }
}

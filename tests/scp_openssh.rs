//! Copies through OpenSSH's `ssh` (`[ssh] copy_transport`) against a real sshd: a round
//! trip with checksum and progress over awkward paths, that `ssh` really carried it (a
//! wrapper program logs each run), the host key policies (accept-new records the key
//! first, a pinned key), a remote write that fails and `ssh` failing on its own (clear
//! errors naming host and path, no part file left), a time-out that kills `ssh` and what
//! it started, and the fallback to libssh2 (small files, no program).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::files::{part_files, random_file};
use common::sshd::Sshd;
use provhost::prim::host::Host;
use provhost::prim::scp::{CopyOptions, Progress, ScpError};
use provhost::prim::ssh::{known_hosts, CopyTransport, HostKeyPolicy, Pool, SshConfig, SshError};

/// A program that logs its arguments to `log` and then runs `body` (`exec /usr/bin/ssh
/// "$@"` by default).
fn wrapper(dir: &Path, name: &str, body: &str) -> (PathBuf, PathBuf) {
    let prog = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\n{body}\n",
            log.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (prog, log)
}

fn runs(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn host(s: &Sshd, cfg: SshConfig, policy: HostKeyPolicy) -> Host {
    Host::remote(Pool::new(cfg), s.target(policy))
}

#[test]
fn a_round_trip_goes_through_ssh_with_checksum_progress_and_awkward_paths() {
    let s = Sshd::start();
    s.trust();
    let (prog, log) = wrapper(s.dir.path(), "ssh-logged", "exec /usr/bin/ssh \"$@\"");
    let cfg = SshConfig {
        copy_transport: CopyTransport::Openssh,
        openssh_program: prog,
        ..s.config()
    };
    let h = host(&s, cfg, HostKeyPolicy::Strict);
    let dir = s.path("it's a \"dir\" $HOME `x`");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src = s.path("src.bin");
    random_file(&src, 24 << 20);
    let dst = dir.join("file with 'quotes' & spaces;.bin");
    let opts = CopyOptions {
        sha256: true,
        ..CopyOptions::default()
    };
    let mut seen: Vec<Progress> = Vec::new();
    let up = h
        .upload(&src, &dst.display().to_string(), &opts, &mut |p| {
            seen.push(p)
        })
        .expect("upload");
    assert_eq!(up.bytes, 24 << 20);
    assert_eq!(seen.first().map(|p| p.done), Some(0));
    assert_eq!(
        seen.last().copied(),
        Some(Progress {
            done: 24 << 20,
            total: 24 << 20
        })
    );
    assert!(std::fs::read(&src).expect("src") == std::fs::read(&dst).expect("dst"));
    assert_eq!(
        std::fs::metadata(&dst).expect("dst").permissions().mode() & 0o777,
        0o644
    );
    let back = dir.join("back 'again'.bin");
    let down = h
        .download(&dst.display().to_string(), &back, &opts, &mut |_| {})
        .expect("download");
    assert_eq!(down.sha256, up.sha256);
    assert!(std::fs::read(&src).expect("src") == std::fs::read(&back).expect("back"));
    assert!(part_files(&dir).is_empty(), "{:?}", part_files(&dir));
    // Asked once for its ciphers, then one run per copy.
    let ran: Vec<String> = runs(&log)
        .into_iter()
        .filter(|l| l != "-Q cipher")
        .collect();
    assert_eq!(ran.len(), 2, "ssh ran once per copy: {ran:?}");
    assert!(
        ran.iter().all(|l| l.contains("StrictHostKeyChecking=yes")
            && l.contains(&format!("UserKnownHostsFile={}", s.known_hosts.display()))
            && l.contains("-F /dev/null")
            && l.contains("BatchMode=yes")),
        "{ran:?}"
    );
}

#[test]
fn accept_new_records_the_key_before_ssh_and_a_pinned_key_is_offered_alone() {
    let s = Sshd::start();
    // Nothing trusted yet: the pool records the key (accept-new), ssh then finds it.
    let cfg = SshConfig {
        copy_transport: CopyTransport::Openssh,
        ..s.config()
    };
    let h = host(&s, cfg.clone(), HostKeyPolicy::AcceptNew);
    let src = s.path("a.bin");
    random_file(&src, 1 << 20);
    h.upload(
        &src,
        &s.path("b.bin").display().to_string(),
        &CopyOptions::default(),
        &mut |_| {},
    )
    .expect("accept-new upload");
    let kh = std::fs::read_to_string(&s.known_hosts).expect("known_hosts");
    assert!(kh.contains("added-by-provhost-accept-new"), "{kh}");
    // Pinned: only the pinned key type is offered, and the copy works.
    known_hosts::pin(&s.known_hosts, &s.addr, s.port, s.host_public_key().trim()).expect("pin");
    let h = host(&s, cfg.clone(), HostKeyPolicy::Strict);
    h.download(
        &s.path("b.bin").display().to_string(),
        &s.path("c.bin"),
        &CopyOptions::default(),
        &mut |_| {},
    )
    .expect("pinned download");
    let client = provhost::prim::ssh::openssh::Client::new(&cfg, &s.target(HostKeyPolicy::Strict))
        .expect("client");
    let line = client.command_line("true").join(" ");
    assert!(line.contains("HostKeyAlgorithms=ssh-ed25519"), "{line}");
    assert_eq!(
        std::fs::read(&src).expect("a"),
        std::fs::read(s.path("c.bin")).expect("c")
    );
}

#[test]
fn a_failed_remote_write_and_a_failing_ssh_are_clear_errors_and_leave_no_part_file() {
    let s = Sshd::start();
    s.trust();
    let cfg = SshConfig {
        copy_transport: CopyTransport::Openssh,
        ..s.config()
    };
    let h = host(&s, cfg.clone(), HostKeyPolicy::Strict);
    let src = s.path("a.bin");
    random_file(&src, 2 << 20);
    // The remote directory does not exist: `cat > part` fails, its message is the error.
    let missing = s.path("no/such/dir/a.bin").display().to_string();
    let err = h
        .upload(&src, &missing, &CopyOptions::default(), &mut |_| {})
        .expect_err("no directory");
    let text = err.to_string();
    assert!(matches!(err, ScpError::Remote { .. }), "{text}");
    assert!(
        text.contains(&s.target(HostKeyPolicy::Strict).label())
            && text.contains(&missing)
            && text.contains("No such file or directory"),
        "{text}"
    );
    // ssh itself fails (here: its program exits 255 with a message, as on a refused
    // connection): the error says so, with the host; the remote part file is removed.
    let (prog, log) = wrapper(
        s.dir.path(),
        "ssh-fails",
        "cat > /dev/null; echo 'ssh: connect to host 127.0.0.1: Connection refused' >&2; exit 255",
    );
    let h2 = host(
        &s,
        SshConfig {
            openssh_program: prog,
            ..cfg.clone()
        },
        HostKeyPolicy::Strict,
    );
    // (-Q cipher is answered by the wrapper with nothing: the program is refused, not run.)
    let err = h2
        .upload(
            &src,
            &s.path("x.bin").display().to_string(),
            &CopyOptions::default(),
            &mut |_| {},
        )
        .expect_err("not OpenSSH");
    assert!(
        matches!(err, ScpError::Ssh(SshError::OpenSsh { .. }))
            && err.to_string().contains("-Q cipher"),
        "{err}"
    );
    assert_eq!(runs(&log).len(), 1, "only asked for its ciphers");
    let (prog, _) = wrapper(
        s.dir.path(),
        "ssh-dies",
        "case \"$1\" in -Q) exec /usr/bin/ssh \"$@\";; esac\n\
         cat > /dev/null; echo 'Connection closed by 127.0.0.1 port 22' >&2; exit 255",
    );
    let h3 = host(
        &s,
        SshConfig {
            openssh_program: prog,
            ..cfg
        },
        HostKeyPolicy::Strict,
    );
    let dst = s.path("y.bin");
    let err = h3
        .upload(
            &src,
            &dst.display().to_string(),
            &CopyOptions::default(),
            &mut |_| {},
        )
        .expect_err("ssh died");
    let text = err.to_string();
    assert!(
        matches!(err, ScpError::Ssh(SshError::OpenSsh { .. }))
            && text.contains("Connection closed")
            && text.contains(&s.target(HostKeyPolicy::Strict).label())
            && text.contains("y.bin"),
        "{text}"
    );
    assert!(!dst.exists());
    let err = h3
        .download(
            &src.display().to_string(),
            &s.path("z.bin"),
            &CopyOptions::default(),
            &mut |_| {},
        )
        .expect_err("ssh died");
    assert!(err.to_string().contains("Connection closed"), "{err}");
    assert!(!s.path("z.bin").exists());
    assert!(
        part_files(s.dir.path()).is_empty(),
        "{:?}",
        part_files(s.dir.path())
    );
}

#[test]
fn a_time_out_kills_ssh_and_what_it_started() {
    let s = Sshd::start();
    s.trust();
    // A sleep no other process has: its duration carries this test's pid.
    let marker = format!("sleep 31.{}", std::process::id());
    // ssh that hangs before connecting (in a child of its own, as a wrapper might).
    let (prog, _) = wrapper(
        s.dir.path(),
        "ssh-hangs",
        &format!(
            "case \"$1\" in -Q) exec /usr/bin/ssh \"$@\";; esac\n\
             {marker} & wait"
        ),
    );
    let cfg = SshConfig {
        copy_transport: CopyTransport::Openssh,
        openssh_program: prog,
        ..s.config()
    };
    let h = host(&s, cfg, HostKeyPolicy::Strict);
    let src = s.path("a.bin");
    random_file(&src, 1 << 20);
    let opts = CopyOptions {
        timeout: Some(Duration::from_secs(1)),
        ..CopyOptions::default()
    };
    let started = Instant::now();
    let err = h
        .download(
            &src.display().to_string(),
            &s.path("b.bin"),
            &opts,
            &mut |_| {},
        )
        .expect_err("time-out");
    assert!(matches!(err, ScpError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!s.path("b.bin").exists() && part_files(s.dir.path()).is_empty());
    // The wrapper's own child went with it.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn auto_uses_ssh_for_large_files_and_libssh2_for_small_ones_or_without_a_program() {
    let s = Sshd::start();
    s.trust();
    let (prog, log) = wrapper(s.dir.path(), "ssh-logged", "exec /usr/bin/ssh \"$@\"");
    let cfg = SshConfig {
        copy_transport: CopyTransport::Auto,
        openssh_min_bytes: 4 << 20,
        openssh_program: prog,
        ..s.config()
    };
    let h = host(&s, cfg.clone(), HostKeyPolicy::Strict);
    let (small, large) = (s.path("small.bin"), s.path("large.bin"));
    random_file(&small, (4 << 20) - 1);
    random_file(&large, 4 << 20);
    for (f, n) in [(&small, 0), (&large, 1)] {
        let dst = s.path("dst.bin");
        h.upload(
            f,
            &dst.display().to_string(),
            &CopyOptions::default(),
            &mut |_| {},
        )
        .expect("upload");
        assert!(std::fs::read(f).expect("src") == std::fs::read(&dst).expect("dst"));
        // The first line is the wrapper answering -Q cipher.
        let copies = runs(&log).iter().filter(|l| !l.starts_with("-Q")).count();
        assert_eq!(copies, n, "{:?}", runs(&log));
    }
    // No program: libssh2 carries it, the copy works.
    let h = host(
        &s,
        SshConfig {
            openssh_program: s.path("no-such-ssh"),
            ..cfg.clone()
        },
        HostKeyPolicy::Strict,
    );
    let back = s.path("back.bin");
    h.download(
        &large.display().to_string(),
        &back,
        &CopyOptions::default(),
        &mut |_| {},
    )
    .expect("fallback download");
    assert!(std::fs::read(&large).expect("large") == std::fs::read(&back).expect("back"));
    // Forced: no program is an error naming it, and nothing is left.
    let h = host(
        &s,
        SshConfig {
            copy_transport: CopyTransport::Openssh,
            openssh_program: s.path("no-such-ssh"),
            ..cfg
        },
        HostKeyPolicy::Strict,
    );
    let err = h
        .download(
            &large.display().to_string(),
            &s.path("none.bin"),
            &CopyOptions::default(),
            &mut |_| {},
        )
        .expect_err("no program");
    assert!(err.to_string().contains("no-such-ssh"), "{err}");
    assert!(!s.path("none.bin").exists() && part_files(s.dir.path()).is_empty());
}

//! File copies against a real sshd: round trip with checksum and progress, awkward paths,
//! sshd killed in the middle of an upload and of a download (through OpenSSH's ssh, the
//! default for large files, and through libssh2), a full remote disk, and a copy between
//! two hosts. The rule under test: never a partial file under the final name.

mod common;

use std::cell::RefCell;
use std::sync::Arc;

use common::files::{part_files, random_file};
use common::sshd::{Sshd, SshdOptions};
use provhost::prim::host::{scp_between, Host};
use provhost::prim::scp::{shell_quote, CopyOptions, Progress, ScpError};
use provhost::prim::ssh::{CopyTransport, ExecOptions, HostKeyPolicy, Pool, SshConfig};

/// A file of `size` pseudo-random bytes (xorshift; fast, incompressible enough).
fn remote(s: &Sshd) -> Host {
    Host::remote(s.pool(), s.target(HostKeyPolicy::Strict))
}

#[test]
fn upload_and_download_round_trip_with_checksum_and_progress() {
    let s = Sshd::start();
    let h = remote(&s);
    let src = s.path("src.bin");
    random_file(&src, 20 << 20);
    let dst = s.path("up.bin");
    let mut seen: Vec<Progress> = Vec::new();
    let opts = CopyOptions {
        sha256: true,
        ..CopyOptions::default()
    };
    let rep = h
        .upload(&src, &dst.display().to_string(), &opts, &mut |p| {
            seen.push(p)
        })
        .expect("upload");
    assert_eq!(rep.bytes, 20 << 20);
    assert_eq!(rep.sha256.as_deref().map(str::len), Some(64));
    assert_eq!(seen.first().map(|p| p.done), Some(0));
    assert_eq!(
        seen.last().copied(),
        Some(Progress {
            done: 20 << 20,
            total: 20 << 20
        })
    );
    assert!(
        std::fs::read(&src).expect("src") == std::fs::read(&dst).expect("dst"),
        "uploaded bytes differ"
    );

    let back = s.path("down.bin");
    let rep2 = h
        .download(&dst.display().to_string(), &back, &opts, &mut |_| {})
        .expect("download");
    assert_eq!(rep2.sha256, rep.sha256);
    assert!(
        std::fs::read(&src).expect("src") == std::fs::read(&back).expect("back"),
        "downloaded bytes differ"
    );
    assert!(
        part_files(s.dir.path()).is_empty(),
        "{:?}",
        part_files(s.dir.path())
    );

    let err = h
        .download("/nonexistent/file", &s.path("x.bin"), &opts, &mut |_| {})
        .expect_err("missing source");
    assert!(matches!(err, ScpError::Remote { .. }), "{err}");
    assert!(!s.path("x.bin").exists());
}

#[test]
fn paths_with_spaces_and_quotes_are_copied_exactly() {
    let s = Sshd::start();
    let h = remote(&s);
    let dir = s.path("it's a \"dir\" $HOME `x`");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src = s.path("plain.bin");
    random_file(&src, 100_000);
    let dst = dir.join("file with 'quotes' & spaces;.bin");
    let dst_s = dst.display().to_string();
    h.upload(&src, &dst_s, &CopyOptions::default(), &mut |_| {})
        .expect("upload");
    assert!(std::fs::read(&src).expect("src") == std::fs::read(&dst).expect("dst"));
    let o = h
        .run(
            &format!("wc -c < {}", shell_quote(&dst_s)),
            &ExecOptions::default(),
        )
        .expect("run");
    assert_eq!(o.stdout.trim(), "100000");
    let back = dir.join("back 'again'.bin");
    h.download(&dst_s, &back, &CopyOptions::default(), &mut |_| {})
        .expect("download");
    assert!(std::fs::read(&src).expect("src") == std::fs::read(&back).expect("back"));
}

/// A host whose large copies go through `transport`.
fn remote_via(s: &Sshd, transport: CopyTransport) -> Host {
    s.trust();
    let cfg = SshConfig {
        copy_transport: transport,
        ..s.config()
    };
    Host::remote(Pool::new(cfg), s.target(HostKeyPolicy::Strict))
}

#[test]
fn sshd_killed_mid_upload_leaves_no_file_under_the_final_name_and_the_pool_recovers() {
    killed_mid_upload(CopyTransport::Auto);
}

#[test]
fn sshd_killed_mid_upload_through_libssh2() {
    killed_mid_upload(CopyTransport::Libssh2);
}

#[test]
fn sshd_killed_mid_download_leaves_no_local_file() {
    killed_mid_download(CopyTransport::Auto);
}

#[test]
fn sshd_killed_mid_download_through_libssh2() {
    killed_mid_download(CopyTransport::Libssh2);
}

/// 256 MiB: under `auto`, through OpenSSH's ssh.
fn killed_mid_upload(transport: CopyTransport) {
    let s = RefCell::new(Sshd::start());
    let (h, src, dst) = {
        let s = s.borrow();
        let src = s.path("big.bin");
        random_file(&src, 256 << 20);
        (remote_via(&s, transport), src, s.path("big-copy.bin"))
    };
    let mut killed = false;
    let err = h
        .upload(
            &src,
            &dst.display().to_string(),
            &CopyOptions::default(),
            &mut |p| {
                if p.done > 0 && !killed {
                    killed = true;
                    s.borrow_mut().kill();
                }
            },
        )
        .expect_err("sshd died");
    assert!(killed, "the copy was interrupted mid-way");
    assert!(matches!(err, ScpError::Ssh(_)), "{err}");
    assert!(!dst.exists(), "no file under the final name");
    s.borrow_mut().restart();
    let small = s.borrow().path("small.bin");
    random_file(&small, 4096);
    h.upload(
        &small,
        &dst.display().to_string(),
        &CopyOptions::default(),
        &mut |_| {},
    )
    .expect("pool recovers");
    assert_eq!(std::fs::metadata(&dst).expect("dst").len(), 4096);
}

fn killed_mid_download(transport: CopyTransport) {
    let s = RefCell::new(Sshd::start());
    let (h, src, dst) = {
        let s = s.borrow();
        let src = s.path("big.bin");
        random_file(&src, 256 << 20);
        (remote_via(&s, transport), src, s.path("local-copy.bin"))
    };
    let mut killed = false;
    let err = h
        .download(
            &src.display().to_string(),
            &dst,
            &CopyOptions::default(),
            &mut |p| {
                if p.done > 0 && !killed {
                    killed = true;
                    s.borrow_mut().kill();
                }
            },
        )
        .expect_err("sshd died");
    assert!(killed);
    assert!(matches!(err, ScpError::Ssh(_)), "{err}");
    assert!(!dst.exists(), "no file under the final name");
    assert!(
        part_files(s.borrow().dir.path()).is_empty(),
        "local part file removed"
    );
    s.borrow_mut().restart();
    h.download(
        &src.display().to_string(),
        &dst,
        &CopyOptions::default(),
        &mut |_| {},
    )
    .expect("pool recovers");
    assert_eq!(std::fs::metadata(&dst).expect("dst").len(), 256 << 20);
}

#[test]
fn a_full_remote_disk_is_a_clear_error_and_leaves_nothing() {
    let test = "a_full_remote_disk_is_a_clear_error_and_leaves_nothing";
    if !common::root_or_skip(test, "mounts a tmpfs in a mount namespace")
        || !common::tool_or_skip(test, "unshare")
    {
        return;
    }
    let s = Sshd::start_with(SshdOptions {
        tmpfs: Some("1m".into()),
        ..SshdOptions::default()
    });
    let small = s.path("small").display().to_string();
    for transport in [CopyTransport::Libssh2, CopyTransport::Openssh] {
        let h = remote_via(&s, transport);
        // The tmpfs exists only in sshd's mount namespace: look through the host.
        let df = h
            .run(
                &format!("df -k {}", shell_quote(&small)),
                &ExecOptions::default(),
            )
            .expect("df");
        assert!(
            df.stdout.contains("provhost-test"),
            "tmpfs mounted: {}",
            df.stdout
        );
        let src = s.path("img.bin");
        random_file(&src, 4 << 20);
        let dst = format!("{small}/img.bin");
        let err = h
            .upload(&src, &dst, &CopyOptions::default(), &mut |_| {})
            .expect_err("disk full");
        assert!(
            err.to_string().contains("No space left on device"),
            "{transport:?}: {err}"
        );
        let ls = h
            .run(
                &format!("ls -A {}", shell_quote(&small)),
                &ExecOptions::default(),
            )
            .expect("ls");
        assert_eq!(
            ls.stdout, "",
            "{transport:?}: neither the file nor its part file is left"
        );
    }
}

#[test]
fn a_file_is_copied_between_two_hosts_through_this_node() {
    let a = Sshd::start();
    let b = Sshd::start();
    let (ha, hb) = (remote(&a), remote(&b));
    let src = a.path("image.qcow2");
    random_file(&src, 8 << 20);
    let dst = b.path("library copy.qcow2");
    let opts = CopyOptions {
        sha256: true,
        ..CopyOptions::default()
    };
    let rep = scp_between(
        &ha,
        &src.display().to_string(),
        &hb,
        &dst.display().to_string(),
        &opts,
        &mut |_| {},
    )
    .expect("copy");
    assert_eq!(rep.bytes, 8 << 20);
    assert!(std::fs::read(&src).expect("src") == std::fs::read(&dst).expect("dst"));
    // Local to local (the embedded setup's image library) uses the same path.
    let local = Host::local(Arc::new(a.config()));
    let dst2 = a.path("local copy.bin");
    scp_between(
        &local,
        &src.display().to_string(),
        &local,
        &dst2.display().to_string(),
        &opts,
        &mut |_| {},
    )
    .expect("local copy");
    assert!(std::fs::read(&src).expect("src") == std::fs::read(&dst2).expect("dst2"));
}

#[test]
fn the_part_file_is_private_during_the_copy_and_planted_symlinks_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sshd::start();
    let h = remote(&s);
    let dir = s.path("dropbox");
    std::fs::create_dir_all(&dir).expect("dir");
    let victim = s.path("victim");
    std::fs::write(&victim, "precious").expect("victim");
    let dst = dir.join("up.bin");
    // What the old naming (DEST.provhost-part-PID-N) let a local user plant in advance.
    for n in 0..64 {
        std::os::unix::fs::symlink(
            &victim,
            dir.join(format!("up.bin.provhost-part-{}-{n}", std::process::id())),
        )
        .expect("plant");
    }
    let src = s.path("src.bin");
    random_file(&src, 8 << 20);
    let modes: RefCell<Vec<u32>> = RefCell::new(Vec::new());
    h.upload(
        &src,
        &dst.display().to_string(),
        &CopyOptions::default(),
        &mut |p| {
            if p.done == 0 {
                return;
            }
            // Mid-copy (or just before the rename): the part file exists and is 0600.
            for _ in 0..100 {
                let parts: Vec<String> = part_files(&dir)
                    .into_iter()
                    .filter(|n| !n.contains(&format!("-{}-", std::process::id())))
                    .collect();
                if let Some(name) = parts.first() {
                    let meta = std::fs::symlink_metadata(dir.join(name)).expect("meta");
                    assert!(meta.file_type().is_file(), "a regular file, not a link");
                    modes.borrow_mut().push(meta.permissions().mode() & 0o777);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        },
    )
    .expect("upload");
    let modes = modes.into_inner();
    assert!(!modes.is_empty(), "the part file was seen during the copy");
    assert!(
        modes.iter().all(|m| *m == 0o600),
        "modes seen: {:?}",
        modes.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
    assert_eq!(std::fs::metadata(&dst).expect("dst").len(), 8 << 20);
    let meta = std::fs::symlink_metadata(&dst).expect("dst");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
}

//! `provhost image build-test` as an operator runs it: the cached test image is found by
//! its recipe (no rebuild), its files match SHA256SUMS, it is recorded once as image
//! `provhost-test` (a second run changes nothing; a new recipe becomes the next production
//! revision, on SQLite and MariaDB), and bad input — a private key given as the public
//! one, a build that fails — ends with a clear error and no directory that looks complete.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::db::TestDb;
use common::testimage;
use provhost::db::pool::Backend;
use provhost::db::Db;

fn provhost(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(args)
        .current_dir(dir)
        .env_remove("PROVHOST_CONFIG")
        .output()
        .expect("run provhost")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn build_test_finds_the_cached_image_and_records_it_once() {
    if !common::root_or_skip("image build-test", "debootstrap and chroot on first build") {
        return;
    }
    let image = testimage::ensure();
    let t = TestDb::initialized(Backend::Sqlite).await.expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let lib = image.library.display().to_string();
    let key = format!("{}.pub", image.key.display());
    let args = [
        "image",
        "build-test",
        "--out",
        &lib,
        "--key",
        &key,
        "--url",
        &t.url,
    ];
    let first = provhost(work.path(), &args);
    let out = text(&first.stdout);
    assert!(first.status.success(), "{out}\n{}", text(&first.stderr));
    assert!(
        out.contains(&format!("test image {}: up to date", image.imagename)),
        "{out}"
    );
    assert!(out.contains("recorded: image"), "{out}");
    let second = provhost(work.path(), &args);
    let out2 = text(&second.stdout);
    assert!(second.status.success(), "{out2}");
    assert!(
        out2.contains("already recorded") && out2.contains("nothing changed"),
        "{out2}"
    );

    let size_mb = std::fs::metadata(image.disk())
        .expect("disk")
        .len()
        .div_ceil(1 << 20) as i64;
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM imagerevision r JOIN image i ON i.id = r.imageid \
             WHERE i.name = 'provhost-test' AND r.imagename = '{}' AND r.production = 1 AND r.deleted = 0 \
             AND r.datecreated IS NOT NULL AND i.deleted = 0 AND i.size = {size_mb}",
            image.imagename
        ))
        .await,
        1
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM imagerevision r JOIN image i ON i.id = r.imageid WHERE i.name = 'provhost-test'")
            .await,
        1,
        "the second run added nothing"
    );

    // The library layout: every file listed in SHA256SUMS and matching it.
    let check = Command::new("sha256sum")
        .args(["--quiet", "-c", "SHA256SUMS"])
        .current_dir(&image.dir)
        .output()
        .expect("sha256sum");
    assert!(check.status.success(), "{}", text(&check.stdout));
    let sums = std::fs::read_to_string(image.dir.join("SHA256SUMS")).expect("sums");
    for f in [
        "disk.qcow2",
        "vmlinuz",
        "initrd.img",
        "cmdline",
        "ssh_host_ed25519_key.pub",
    ] {
        assert!(sums.contains(&format!("  {f}\n")), "{f} in SHA256SUMS");
    }
    let cmdline = image.cmdline();
    assert!(cmdline.contains("root=/dev/vda") && cmdline.contains("init=/sbin/testinit"));
    assert!(
        !cmdline.contains("testip="),
        "no network args in the image's cmdline"
    );
}

async fn registration_on(db: &Db) {
    use provhost::db::image::register_library_image;
    let a = register_library_image(
        db,
        "provhost-test",
        "pt",
        "linux",
        "provhost-test-aaa",
        200,
        "",
    )
    .await
    .expect("first");
    assert!(a.created);
    assert_eq!(a.revision, 0);
    let again = register_library_image(
        db,
        "provhost-test",
        "pt",
        "linux",
        "provhost-test-aaa",
        200,
        "",
    )
    .await
    .expect("again");
    assert_eq!(
        again,
        provhost::db::image::Registered {
            created: false,
            ..a.clone()
        }
    );
    let b = register_library_image(
        db,
        "provhost-test",
        "pt",
        "linux",
        "provhost-test-bbb",
        230,
        "new recipe",
    )
    .await
    .expect("next recipe");
    assert!(b.created);
    assert_eq!((b.image_id, b.revision), (a.image_id, 1));
    let revs = provhost::db::image::image_revisions(db, a.image_id)
        .await
        .expect("revisions");
    let prod: Vec<_> = revs
        .iter()
        .filter(|r| r.production)
        .map(|r| r.imagename.as_str())
        .collect();
    assert_eq!(
        prod,
        ["provhost-test-bbb"],
        "the new recipe is the production revision"
    );
    let err = register_library_image(db, "x", "x", "no-such-os", "x-1", 1, "")
        .await
        .expect_err("unknown OS")
        .to_string();
    assert!(err.contains("no-such-os"), "{err}");
}

#[tokio::test]
async fn a_new_recipe_becomes_the_next_production_revision_sqlite() {
    let t = TestDb::initialized(Backend::Sqlite).await.expect("sqlite");
    registration_on(&t.db).await;
}

#[tokio::test]
async fn a_new_recipe_becomes_the_next_production_revision_mariadb() {
    let Some(t) = TestDb::initialized(Backend::MySql).await else {
        return;
    };
    registration_on(&t.db).await;
}

#[test]
fn a_private_key_or_a_failed_build_is_a_clear_error_and_leaves_no_image() {
    if !common::root_or_skip("image build-test errors", "debootstrap") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(w.join("k"))
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let lib = w.join("lib");
    let lib_s = lib.display().to_string();
    let cache = w.join("cache").display().to_string();

    // The private key where the public one belongs.
    let private = w.join("k").display().to_string();
    let out = provhost(
        w,
        &[
            "image",
            "build-test",
            "--out",
            &lib_s,
            "--key",
            &private,
            "--no-register",
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&private) && err.contains(".pub"), "{err}");

    // Not root: a clear error before anything is made (the image is not cached).
    let public = format!("{private}.pub");
    std::fs::set_permissions(w, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    if common::tool_or_skip("build-test as nobody", "setpriv") {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_provhost"))
            .args([
                "image",
                "build-test",
                "--out",
                "/nonexistent/lib",
                "--key",
                &public,
                "--no-register",
            ])
            .current_dir(w)
            .env_remove("PROVHOST_CONFIG")
            .output()
            .expect("setpriv");
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("needs root"), "{err}");
    }

    // A build killed earlier left a folder with a mount in it: the next build unmounts it
    // and removes it before it starts.
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // Only matters when the build did not clean up (the test then fails anyway).
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let stale = lib.join(".build-provhost-test-000000000000-1");
    let _unmount = Unmount(stale.join("root/proc"));
    std::fs::create_dir_all(stale.join("root/proc")).expect("stale folder");
    let st = Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(stale.join("root/proc"))
        .status()
        .expect("mount");
    assert!(st.success(), "mount proc in the stale folder");

    // A mirror that does not answer: debootstrap fails at once, the error names the log.
    let out = provhost(
        w,
        &[
            "image",
            "build-test",
            "--out",
            &lib_s,
            "--key",
            &public,
            "--cache",
            &cache,
            "--mirror",
            "http://127.0.0.1:9/debian",
            "--no-register",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("build failed") && err.contains("failed.log"),
        "{err}"
    );
    let names: Vec<String> = std::fs::read_dir(&lib)
        .expect("library")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("provhost-test-") && !n.starts_with(".build-")),
        "nothing that looks like an image, no build leftovers: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".failed.log")),
        "{names:?}"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    assert!(!mounts.contains(&lib_s), "no mount left under the library");
}

//! The shipped `os/linux.rhai` against isolated lab hosts: a network namespace with its own
//! sshd (on a port other than 22), its own /etc, /home, /var/lib/provhost, /run and host
//! name (`LabHost::start_isolated`), so what the module does to accounts, root's password
//! and sudoers stays on that computer. Routines are called one by one (as `provhost call`
//! does) through the real SSH pool; the security items of issue 12 each have a test here:
//! passwords only on stdin (cmdlines sampled during set_password), authorized_keys written
//! as the user (a ~/.ssh symlink leads nowhere as root), the firewall on the computer's SSH
//! port, the post_load marker and a firewall recreated after a flush, hostile database
//! values never run, and provhost's own session not counted as the user's.
//! Needs root, iproute2, nft, useradd, runuser, sudo (skips loudly otherwise).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::netns::LabHost;
use common::scripts::ScriptDir;
use provhost::host::{
    CallOptions, Ctx, CtxBackend, Limits, MemoryBackend, ReservationData, ScriptHost,
};
use provhost::prim::host::Host;
use provhost::prim::remote::RemotePrims;
use provhost::prim::ssh::{ExecOptions, HostKeyPolicy, Pool, Target};

const SSH_PORT: u16 = 2222;

fn can_run(test: &str) -> bool {
    common::root_or_skip(test, "network and mount namespaces, useradd")
        && [
            "ip", "nft", "useradd", "runuser", "nsenter", "unshare", "visudo",
        ]
        .iter()
        .all(|t| common::tool_or_skip(test, t))
}

/// An isolated lab host, a script host with the shipped os/linux and provisioning/lab, and
/// the reservation data that points at the lab host.
struct Lab {
    lab: LabHost,
    _scripts: ScriptDir,
    host: Arc<ScriptHost>,
    backend: Arc<MemoryBackend>,
    data: ReservationData,
    /// The SSH pool the routines use (`ctx.computer()` sessions).
    pool: Arc<Pool>,
}

impl Lab {
    fn start() -> Lab {
        let lab = LabHost::start_isolated(SSH_PORT);
        lab.sshd().trust();
        let scripts = ScriptDir::new();
        for rel in ["os/linux.rhai", "os/ubuntu.rhai", "provisioning/lab.rhai"] {
            let src =
                std::fs::read_to_string(format!("{}/scripts/{rel}", env!("CARGO_MANIFEST_DIR")))
                    .expect("shipped script");
            scripts.write(rel, src);
        }
        let prims = Arc::new(RemotePrims::new(lab.sshd().config()));
        let pool = Arc::clone(prims.pool());
        let host = ScriptHost::new(
            provhost::host::HostOptions {
                scripts_dir: scripts.scripts.clone(),
                stdlib_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/stdlib").into(),
                limits: Limits {
                    call_timeout_secs: 120,
                    ..Limits::default()
                },
            },
            &[prims],
        );
        let errors = host.load_all();
        assert!(errors.is_empty(), "{errors:?}");
        let data = ReservationData {
            reservation_id: 9,
            computer_id: 4,
            computer_node_name: "labpc1".into(),
            computer_hostname: "labpc1.test".into(),
            computer_ip: lab.addr.clone(),
            computer_ssh_port: i64::from(SSH_PORT),
            computer_type: "lab".into(),
            imagerevision_id: 17,
            image_os_type: "linux".into(),
            image_os_module: "linux".into(),
            image_root_access: true,
            ..ReservationData::default()
        };
        Lab {
            lab,
            _scripts: scripts,
            host,
            backend: Arc::new(MemoryBackend::default()),
            data,
            pool,
        }
    }

    fn ctx(&self) -> Ctx {
        Ctx::new(self.data.clone(), self.backend.clone())
    }

    fn ctx_with(&self, f: impl FnOnce(&mut ReservationData)) -> Ctx {
        let mut d = self.data.clone();
        f(&mut d);
        Ctx::new(d, self.backend.clone())
    }

    fn call(
        &self,
        module: &str,
        ctx: &Ctx,
        routine: &str,
        args: Vec<rhai::Dynamic>,
    ) -> Result<String, String> {
        let key = self.host.find_module(module).expect("module");
        self.host
            .call(&key, routine, Some(ctx), args, &CallOptions::default())
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    }

    fn os(&self, ctx: &Ctx, routine: &str, args: Vec<rhai::Dynamic>) -> Result<String, String> {
        self.call("os/linux", ctx, routine, args)
    }

    fn set_policy(&self, value: &str) {
        self.backend
            .set_computer_var(&self.data, "os_linux.root_password", value)
            .expect("policy");
    }
}

fn user(login: &str, uid: i64, password: &str, keys: &str, root: bool) -> rhai::Dynamic {
    let mut m = rhai::Map::new();
    m.insert("login".into(), login.into());
    m.insert("uid".into(), uid.into());
    m.insert("password".into(), password.into());
    m.insert("ssh_keys".into(), keys.into());
    m.insert("root".into(), root.into());
    m.into()
}

/// A uid no account of this machine has (users' processes are killed by uid, and the lab
/// host shares this machine's process table).
fn test_uid(n: u32) -> i64 {
    i64::from(61_000 + (std::process::id() % 900) * 4 + n)
}

fn login_name(tag: &str) -> String {
    format!("ph{tag}{}", std::process::id() % 100_000)
}

fn keypair(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = dir.join("user_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "user@test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    (key, public.trim().to_string())
}

/// ssh as `login` with `key` to the lab host, from this machine; returns (success, stdout).
fn ssh_as(lab: &LabHost, login: &str, key: &std::path::Path, cmd: &str) -> (bool, String) {
    let o = Command::new("ssh")
        .args(["-p", &SSH_PORT.to_string(), "-i"])
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{login}@{}", lab.addr))
        .arg(cmd)
        .output()
        .expect("ssh");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// Samples every process's command line on this machine (the lab host shares its process
/// table) into a set, until stopped.
struct CmdlineSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CmdlineSampler {
    fn start() -> CmdlineSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, v) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            // Bounded by the stop flag, which the owner sets (also on drop).
            while !s.load(Ordering::Relaxed) {
                let Ok(dir) = std::fs::read_dir("/proc") else {
                    return;
                };
                for e in dir.flatten() {
                    if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                        if !c.is_empty() {
                            let line = String::from_utf8_lossy(&c).replace('\0', " ");
                            v.lock().expect("set").insert(line);
                        }
                    }
                }
            }
        });
        CmdlineSampler {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler");
        }
        std::mem::take(&mut *self.seen.lock().expect("set"))
    }
}

impl Drop for CmdlineSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn lab_post_load_users_firewall_and_is_user_connected() {
    let test = "lab_post_load_users_firewall_and_is_user_connected";
    if !can_run(test) {
        return;
    }
    let l = Lab::start();
    let lab = &l.lab;
    let ctx = l.ctx();
    let shadow_root = || lab.sh_ok("getent shadow root | cut -d: -f2");

    // post_load with the default policy: a new root password, nobody's.
    let before = shadow_root();
    assert_eq!(l.os(&ctx, "post_load", vec![]).expect("post_load"), "true");
    let after = shadow_root();
    assert_ne!(before, after, "root's password was not changed");
    assert_eq!(lab.sh_ok("hostname").trim(), "labpc1");
    assert_eq!(lab.sh_ok("cat /etc/hostname").trim(), "labpc1");
    assert!(lab
        .sh_ok("cat /etc/ssh/sshd_config.d/01-provhost.conf /etc/ssh/sshd_config 2>/dev/null | head -n 50")
        .contains("PermitRootLogin prohibit-password"));
    let rules = lab.sh_ok("nft list table inet provhost");
    assert!(
        rules.contains(&format!("tcp dport {SSH_PORT} drop")),
        "{rules}"
    );
    assert!(
        !rules.contains("dport 22 "),
        "the firewall must use the computer's port: {rules}"
    );
    assert!(
        rules.contains(&format!(
            "ip saddr {} tcp dport {SSH_PORT} accept",
            lab.gateway
        )),
        "{rules}"
    );
    assert_eq!(
        lab.sh_ok("cat /var/lib/provhost/post_load").trim(),
        "imagerevision=17 computer=4"
    );

    // The "keep" policy leaves root's password alone.
    l.set_policy("keep");
    assert_eq!(l.os(&ctx, "post_load", vec![]).expect("post_load"), "true");
    assert_eq!(shadow_root(), after, "policy keep changed root's password");
    l.set_policy("sometimes");
    let err = l.os(&ctx, "post_load", vec![]).expect_err("bad policy");
    assert!(
        err.contains("os_linux.root_password") && err.contains("\"keep\""),
        "{err}"
    );
    l.set_policy("keep");
    assert_eq!(l.os(&ctx, "post_load", vec![]).expect("post_load"), "true");

    // node_status: ready with the marker; post_load without it, or for another revision.
    assert_eq!(
        l.call("provisioning/lab", &ctx, "node_status", vec![])
            .unwrap(),
        "ready"
    );
    lab.sh_ok("rm /var/lib/provhost/post_load");
    assert_eq!(
        l.call("provisioning/lab", &ctx, "node_status", vec![])
            .unwrap(),
        "post_load"
    );
    assert_eq!(l.os(&ctx, "post_load", vec![]).expect("post_load"), "true");
    let other_rev = l.ctx_with(|d| d.imagerevision_id = 18);
    assert_eq!(
        l.call("provisioning/lab", &other_rev, "node_status", vec![])
            .unwrap(),
        "post_load"
    );

    // A user with a uid, a key, root access.
    let dir = tempfile::tempdir().expect("tmp");
    let (key, public) = keypair(dir.path());
    let login = login_name("u");
    let uid = test_uid(0);
    let pw = "Pw-for-the-user-0123456789";
    // The user comes from the management node's own address (NAT, a lab).
    let ctx = l.ctx_with(|d| d.remote_ip = lab.gateway.clone());
    assert_eq!(
        l.os(
            &ctx,
            "add_user",
            vec![user(&login, uid, pw, &format!("{public}\n"), true)]
        )
        .expect("add_user"),
        "true"
    );
    assert_eq!(lab.sh_ok(&format!("id -u {login}")).trim(), uid.to_string());
    let keys = lab.sh_ok(&format!("cat /home/{login}/.ssh/authorized_keys"));
    assert_eq!(keys.trim(), public);
    assert_eq!(
        lab.sh_ok(&format!(
            "stat -c %U:%a /home/{login}/.ssh /home/{login}/.ssh/authorized_keys"
        )),
        format!("{login}:700\n{login}:600\n")
    );
    assert!(lab
        .sh_ok(&format!("cat /etc/sudoers.d/provhost-{login}"))
        .contains("NOPASSWD: ALL"));
    assert!(lab
        .sh_ok(&format!("sudo -l -U {login}"))
        .contains("NOPASSWD: ALL"));

    // grant_access after the ruleset is gone (a reboot): the table comes back.
    lab.sh_ok("nft flush ruleset");
    assert_eq!(l.os(&ctx, "grant_access", vec![]).expect("grant"), "true");
    let set = lab.sh_ok("nft list set inet provhost connect");
    assert!(set.contains(&lab.gateway), "{set}");
    assert!(lab
        .sh_ok("nft list table inet provhost")
        .contains(&format!("tcp dport {SSH_PORT} drop")));

    // provhost's pooled sessions come from the user's address: not the user.
    assert_eq!(l.os(&ctx, "is_user_connected", vec![]).unwrap(), "false");
    let mut session = Command::new("ssh")
        .args(["-p", &SSH_PORT.to_string(), "-i"])
        .arg(&key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{login}@{}", lab.addr))
        .arg("sleep 60")
        .spawn()
        .expect("user's ssh");
    let mut connected = false;
    for _ in 0..50 {
        if l.os(&ctx, "is_user_connected", vec![]).unwrap() == "true" {
            connected = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = session.kill();
    let _ = session.wait();
    assert!(connected, "the user's own SSH session was not seen");
    let (ok, out) = ssh_as(lab, &login, &key, "id -un");
    assert!(ok && out.trim() == login, "key login: {out}");

    // set_password: the password is never on a command line on the computer.
    let sampler = CmdlineSampler::start();
    let secret = "Sampled-secret-9f8e7d6c5b4a";
    for _ in 0..20 {
        l.os(
            &ctx,
            "set_password",
            vec![login.clone().into(), secret.into()],
        )
        .expect("set_password");
    }
    // The same sampler sees a secret that is passed the old way (its teeth).
    lab.sh_ok("sh -c 'sleep 0.3; true Teeth-check-4711'");
    let seen = sampler.finish();
    assert!(
        seen.iter().any(|c| c.contains("chpasswd")),
        "the sampler never saw chpasswd run"
    );
    assert!(
        seen.iter().any(|c| c.contains("Teeth-check-4711")),
        "the sampler misses command lines"
    );
    let leaked: Vec<&String> = seen.iter().filter(|c| c.contains(secret)).collect();
    assert!(leaked.is_empty(), "password on a command line: {leaked:?}");

    // delete_user: processes, account, home and sudo entry gone.
    lab.sh_ok(&format!(
        "setsid runuser -u {login} -- sleep 300 >/dev/null 2>&1 < /dev/null &"
    ));
    std::thread::sleep(Duration::from_millis(200));
    let procs_of_user = || {
        lab.sh_ok(&format!("for d in /proc/[0-9]*; do [ \"$(stat -c %u $d 2>/dev/null)\" = {uid} ] && echo $d; done; true"))
    };
    assert!(
        !procs_of_user().trim().is_empty(),
        "the user's process did not start"
    );
    assert_eq!(l.os(&ctx, "sanitize", vec![]).expect("sanitize"), "true");
    assert!(
        !lab.sh(&format!("id -u {login}")).status.success(),
        "user still there"
    );
    assert!(
        !lab.sh(&format!("test -e /home/{login}")).status.success(),
        "home still there"
    );
    assert!(!lab
        .sh(&format!("test -e /etc/sudoers.d/provhost-{login}"))
        .status
        .success());
    let procs = procs_of_user();
    assert!(procs.trim().is_empty(), "processes left: {procs}");
    assert!(!lab
        .sh_ok("nft list set inet provhost connect")
        .contains(&lab.gateway));
    assert!(lab.sh_ok("cat /var/lib/provhost/users").trim().is_empty());
}

/// is_user_connected with the user's address = the management node's (NAT, a lab) while
/// several of provhost's pooled sessions are open to the computer — one running a command
/// for the same target as `ctx.computer()`, one for another target on the same address and
/// port (a strict host key policy, as `remote_host` makes), plus the routine's own: none of
/// them is the user. A connection of another process from that address is (the limit
/// docs/os-linux.md describes), which also shows the check sees connections at all.
#[test]
fn lab_is_user_connected_ignores_every_pooled_session() {
    let test = "lab_is_user_connected_ignores_every_pooled_session";
    if !can_run(test) {
        return;
    }
    let l = Lab::start();
    let lab = &l.lab;
    let ctx = l.ctx_with(|d| d.remote_ip = lab.gateway.clone());
    let target = |policy| Target {
        host: lab.addr.clone(),
        port: SSH_PORT,
        user: lab.sshd().config().user,
        identity: lab.sshd().config().identity,
        host_key: policy,
    };
    let from_us = || {
        lab.sh_ok(&format!(
            "ss -Htn state established '( sport = :{SSH_PORT} )' | grep -c ' {}:' || true",
            lab.gateway
        ))
        .trim()
        .parse::<u32>()
        .unwrap_or(0)
    };
    assert_eq!(l.os(&ctx, "is_user_connected", vec![]).unwrap(), "false");
    let busy: Vec<_> = [HostKeyPolicy::AcceptNew, HostKeyPolicy::Strict]
        .into_iter()
        .map(|policy| {
            let h = Host::remote(Arc::clone(&l.pool), target(policy));
            std::thread::spawn(move || {
                let o = h
                    .run(
                        "sleep 6",
                        &ExecOptions {
                            timeout: Some(Duration::from_secs(20)),
                            ..ExecOptions::default()
                        },
                    )
                    .expect("pooled session");
                assert_eq!(o.code, 0, "{o:?}");
            })
        })
        .collect();
    // Both sessions are up and busy (the idle one the first call left is leased again).
    let t = std::time::Instant::now();
    while (l.pool.stats().open < 2 || l.pool.stats().idle > 0 || from_us() < 2)
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        l.pool.stats().open >= 2 && from_us() >= 2,
        "two pooled sessions open: {:?}, {} connections from {}",
        l.pool.stats(),
        from_us(),
        lab.gateway
    );
    for _ in 0..3 {
        assert_eq!(
            l.os(&ctx, "is_user_connected", vec![]).unwrap(),
            "false",
            "provhost's own sessions counted as the user ({:?})",
            l.pool.stats()
        );
    }
    assert!(l.pool.stats().open >= 3, "{:?}", l.pool.stats());
    for b in busy {
        b.join().expect("busy session");
    }

    // Another process's connection from the same address is not one of ours.
    let mut other = common::procs::KillOnDrop(
        Command::new("ssh")
            .args(["-p", &SSH_PORT.to_string(), "-i"])
            .arg(lab.sshd().config().identity)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{}@{}", lab.sshd().config().user, lab.addr))
            .arg("sleep 30")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh"),
    );
    let mut seen = false;
    for _ in 0..50 {
        if l.os(&ctx, "is_user_connected", vec![]).unwrap() == "true" {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = other.0.kill();
    assert!(seen, "a connection of another process was not seen");
}

#[test]
fn lab_authorized_keys_through_a_symlinked_ssh_dir_are_not_written_as_root() {
    let test = "lab_authorized_keys_through_a_symlinked_ssh_dir_are_not_written_as_root";
    if !can_run(test) {
        return;
    }
    let l = Lab::start();
    let lab = &l.lab;
    let ctx = l.ctx();
    let login = login_name("k");
    let uid = test_uid(1);
    l.os(
        &ctx,
        "add_user",
        vec![user(&login, uid, "pw-12345678-abcdefgh", "", false)],
    )
    .expect("add_user");
    // The user swaps ~/.ssh for a link to a root-owned directory (as /etc/cron.d would be).
    lab.sh_ok(&format!(
        "mkdir -p /etc/provhost-victim && rm -rf /home/{login}/.ssh && ln -s /etc/provhost-victim /home/{login}/.ssh && chown -h {login}: /home/{login}/.ssh"
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let (_key, public) = keypair(dir.path());
    let err = l
        .os(
            &ctx,
            "add_user",
            vec![user(&login, uid, "pw-12345678-abcdefgh", &public, false)],
        )
        .expect_err("writing through the link must fail");
    assert!(
        err.contains("installing") && err.contains("SSH keys"),
        "{err}"
    );
    assert_eq!(
        lab.sh_ok("ls -A /etc/provhost-victim"),
        "",
        "root wrote into the link's target"
    );
    l.os(&ctx, "sanitize", vec![]).expect("sanitize");
}

#[test]
fn lab_hostile_database_values_are_refused_and_never_run() {
    let test = "lab_hostile_database_values_are_refused_and_never_run";
    if !can_run(test) {
        return;
    }
    let l = Lab::start();
    let lab = &l.lab;
    l.set_policy("keep");
    let marker = format!("/tmp/provhost-pwned-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let payloads = [
        format!("x$(touch {marker})"),
        format!("x;touch {marker}"),
        format!("x`touch {marker}`"),
        format!("x'; touch {marker}; '"),
        format!("x\ntouch {marker}"),
        format!("ü$(touch {marker})"),
        "a".repeat(70),
        format!("x\"; touch {marker}; \""),
    ];
    let ctx = l.ctx();
    for p in &payloads {
        // As a login: refused.
        let err = l
            .os(&ctx, "add_user", vec![user(p, 0, "pw-12345678", "", false)])
            .expect_err(p);
        assert!(err.contains("refusing user name"), "{p:?}: {err}");
        // As the user's address: refused.
        let c = l.ctx_with(|d| d.remote_ip = p.clone());
        let err = l.os(&c, "grant_access", vec![]).expect_err(p);
        assert!(err.contains("is not an IPv4 address"), "{p:?}: {err}");
        // As the computer's host name: refused.
        let c = l.ctx_with(|d| d.computer_node_name = p.clone());
        let err = l.os(&c, "post_load", vec![]).expect_err(p);
        assert!(err.contains("refusing host name"), "{p:?}: {err}");
        // As an SSH key (also after a real key's type): refused. (A long run of base64
        // letters is a key's data; sshd ignores a malformed one.)
        if !p.contains(&marker) {
            continue;
        }
        let login = login_name("h");
        let err = l
            .os(
                &ctx,
                "add_user",
                vec![user(
                    &login,
                    test_uid(2),
                    "pw-12345678",
                    &format!("ssh-ed25519 {p}"),
                    false,
                )],
            )
            .expect_err(p);
        assert!(
            err.contains("refusing") && err.contains("SSH key"),
            "{p:?}: {err}"
        );
    }
    // A key with options (command="…", from=…) is refused; so is a uid of a system account.
    let login = login_name("h");
    let dir = tempfile::tempdir().expect("tmp");
    let (_k, public) = keypair(dir.path());
    for keys in [
        format!("command=\"touch {marker}\" {public}"),
        format!("from=\"*\",no-pty {public}"),
        format!("{public}\nenvironment=\"X=1\" {public}"),
    ] {
        let err = l
            .os(
                &ctx,
                "add_user",
                vec![user(&login, test_uid(2), "pw-12345678", &keys, false)],
            )
            .expect_err(&keys);
        assert!(err.contains("key options"), "{err}");
    }
    let err = l
        .os(
            &ctx,
            "add_user",
            vec![user(&login, 5, "pw-12345678", "", false)],
        )
        .expect_err("uid 5");
    assert!(err.contains("refusing uid 5"), "{err}");
    // Passwords are data on stdin: shell characters are harmless and kept exactly.
    l.os(
        &ctx,
        "add_user",
        vec![user(&login, test_uid(2), "pw-12345678", "", false)],
    )
    .expect("add_user");
    for p in &payloads[..4] {
        let pw = format!("{p}-Long-enough");
        l.os(
            &ctx,
            "set_password",
            vec![login.clone().into(), pw.clone().into()],
        )
        .expect("hostile password");
        // The stored hash is the hash of exactly that password.
        let salt_hash = lab.sh_ok(&format!("getent shadow {login} | cut -d: -f2"));
        let check = Command::new("python3")
            .args([
                "-c",
                "import crypt,sys; h=sys.argv[2].strip(); print(crypt.crypt(sys.argv[1], h) == h)",
                &pw,
                &salt_hash,
            ])
            .output();
        if let Ok(o) = check {
            let out = String::from_utf8_lossy(&o.stdout);
            if o.status.success() {
                assert_eq!(out.trim(), "True", "password {pw:?} not stored as given");
            }
        }
    }
    let err = l
        .os(
            &ctx,
            "set_password",
            vec![login.clone().into(), "two\nlines".into()],
        )
        .expect_err("newline");
    assert!(err.contains("line break"), "{err}");
    l.os(&ctx, "sanitize", vec![]).expect("sanitize");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "a database value was executed"
    );
    assert!(
        !lab.sh(&format!("test -e {marker}")).status.success(),
        "a database value was executed on the computer"
    );
}

/// The shipped os/ubuntu (extends os/linux) on a lab host: post_load and add_user are
/// os/linux's, inherited; its own pre_capture handles GRUB's recordfail flag (absent on a
/// lab host without GRUB: it says so) and then runs os/linux's through `super::`, which
/// removes the user and provhost's records.
#[test]
fn lab_ubuntu_inherits_linux_and_overrides_pre_capture() {
    if !can_run("lab_ubuntu_inherits_linux_and_overrides_pre_capture") {
        return;
    }
    let lab = Lab::start();
    let ctx = lab.ctx_with(|d| d.image_os_module = "ubuntu".into());
    assert_eq!(
        lab.call("os/ubuntu", &ctx, "post_load", vec![]),
        Ok("true".into())
    );
    lab.lab
        .sh_ok("test -f /var/lib/provhost/post_load && nft list table inet provhost >/dev/null");
    assert_eq!(lab.lab.sh_ok("hostname").trim(), "labpc1");

    let login = login_name("ub");
    assert_eq!(
        lab.call(
            "os/ubuntu",
            &ctx,
            "add_user",
            vec![user(&login, test_uid(3), "Ubuntu-pw-0123456789", "", false)]
        ),
        Ok("true".into())
    );
    lab.lab.sh_ok(&format!("id -u {login}"));

    let before = lab.backend.entries().len();
    // On a lab host /var/lib/provhost is a bind mount, which os/linux's final `rm -rf` of
    // that folder cannot remove (its contents go): the error names os/linux's file and the
    // super:: call that reached it. On a real computer it is a plain folder.
    match lab.call("os/ubuntu", &ctx, "pre_capture", vec![]) {
        Ok(v) => assert_eq!(v, "true"),
        Err(e) => assert!(
            e.contains("/os/linux.rhai:")
                && e.contains("os/ubuntu::pre_capture")
                && e.contains("via super::pre_capture (linux)")
                && e.contains("Device or resource busy"),
            "{e}"
        ),
    }
    let grub = lab
        .lab
        .sh("command -v grub-editenv && test -f /boot/grub/grubenv")
        .status
        .success();
    let entries: Vec<String> = lab.backend.entries()[before..]
        .iter()
        .map(|(_, t)| t.clone())
        .collect();
    let want = if grub {
        "GRUB recordfail cleared before capture"
    } else {
        "no GRUB environment block (grub-editenv or /boot/grub/grubenv absent); nothing to clear"
    };
    assert!(entries.iter().any(|e| e == want), "{entries:?}");
    // os/linux's pre_capture ran (super::): the user and the records are gone.
    assert!(!lab.lab.sh(&format!("id -u {login}")).status.success());
    assert_eq!(lab.lab.sh_ok("ls -A /var/lib/provhost").trim(), "");
}

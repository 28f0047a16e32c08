//! `provhost db init`: on an empty database it creates VCL's tables with VCL's seed rows;
//! run again it only verifies; a missing column is named; on a database made from VCL's
//! own schema it adds nothing but `provhost_*` tables, and provhost works on it.

mod common;

use common::db::TestDb;
use provhost::db::{requests, schema, Backend, DbError};

async fn fresh_database_gets_vcl_tables_and_seeds(backend: Backend) {
    let Some(t) = TestDb::empty(backend).await else {
        return;
    };
    let report = schema::init(&t.db, "mn1.test")
        .await
        .expect("init on an empty database");
    assert!(report.created_vcl_tables);
    for t in provhost::db::schema::PROVHOST_TABLES {
        assert!(
            report.provhost_tables.iter().any(|p| p == t),
            "{t} missing: {:?}",
            report.provhost_tables
        );
    }
    assert_eq!(
        report.management_node.as_ref().map(|(_, h)| h.as_str()),
        Some("mn1.test")
    );
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `state`").await, 29);
    assert_eq!(
        t.scalar("SELECT `id` FROM `state` WHERE `name` = 'pending'")
            .await,
        14
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `computerloadstate`").await,
        56
    );
    assert_eq!(
        t.scalar("SELECT `id` FROM `computerloadstate` WHERE `loadstatename` = 'reserved'")
            .await,
        18
    );
    assert_eq!(
        t.scalar("SELECT `id` FROM `user` WHERE `unityid` = 'vclreload'")
            .await,
        2
    );
    assert_eq!(
        t.scalar("SELECT `id` FROM `user` WHERE `unityid` = 'vclsystem'")
            .await,
        3
    );
    assert_eq!(
        t.scalar("SELECT `moduleid` FROM `provisioning` WHERE `name` = 'libvirt'")
            .await,
        27
    );

    let again = schema::init(&t.db, "mn1.test").await.expect("init again");
    assert!(!again.created_vcl_tables, "a second init only verifies");
    assert_eq!(again.management_node, None);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `managementnode`").await, 1);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `provhost_schema`").await, 1);
}

async fn a_missing_column_is_named(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    t.exec("ALTER TABLE `reservation` DROP COLUMN `remoteIP`")
        .await;
    t.exec("DELETE FROM `computerloadstate` WHERE `loadstatename` = 'postreserve'")
        .await;
    let err = schema::init(&t.db, "mn1.test")
        .await
        .expect_err("verify must fail");
    let text = err.to_string();
    assert!(matches!(err, DbError::Schema { .. }), "{text}");
    assert!(
        text.contains("table `reservation` lacks column(s) remoteIP"),
        "{text}"
    );
    t.exec("DROP TABLE `vmprofile`").await;
    let text = schema::verify(&t.db)
        .await
        .expect_err("verify must fail")
        .to_string();
    assert!(text.contains("table `vmprofile` is missing"), "{text}");
    assert!(text.contains("remoteIP"), "all problems at once: {text}");
}

/// A `provhost_computervar` made without its (computerid, name) key (the upsert needs it)
/// is rebuilt with it by `db init`, one value kept per key; then setting a variable twice
/// leaves one row.
async fn init_adds_a_missing_computervar_key(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    assert!(schema::upgrade::computervar_has_key(&t.db)
        .await
        .expect("keys"));
    t.exec("DROP TABLE `provhost_computervar`").await;
    t.exec("CREATE TABLE `provhost_computervar` (`computerid` INTEGER NOT NULL, `name` VARCHAR(64) NOT NULL, `value` TEXT NOT NULL)")
        .await;
    t.exec("INSERT INTO `provhost_computervar` VALUES (1, 'sim_power', 'off'), (1, 'sim_power', 'on'), (2, 'x', 'y')")
        .await;
    assert!(!schema::upgrade::computervar_has_key(&t.db)
        .await
        .expect("keys"));
    schema::init(&t.db, "mn1.test").await.expect("init again");
    assert!(schema::upgrade::computervar_has_key(&t.db)
        .await
        .expect("keys"));
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `provhost_computervar`")
            .await,
        2
    );
    for v in ["a", "b"] {
        provhost::db::flow::set_computer_var(&t.db, 1, "sim_power", v)
            .await
            .expect("upsert");
    }
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `provhost_computervar` WHERE `computerid` = 1")
            .await,
        1
    );
    assert_eq!(
        provhost::db::flow::computer_var(&t.db, 1, "sim_power")
            .await
            .expect("read")
            .as_deref(),
        Some("b")
    );
    // Run again: the key is there, nothing is rebuilt.
    schema::init(&t.db, "mn1.test")
        .await
        .expect("init a third time");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `provhost_computervar`")
            .await,
        2
    );
}

crate::on_both_backends!(
    fresh_database_gets_vcl_tables_and_seeds,
    a_missing_column_is_named,
    init_adds_a_missing_computervar_key
);

/// Split our fixture file (statements end with `;` at the end of a line).
fn fixture_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") || line.trim().is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(cur.trim().trim_end_matches(';').to_string());
            cur.clear();
        }
    }
    out
}

async fn table_shapes(t: &TestDb) -> Vec<(String, i64)> {
    let provhost::db::pool::Pool::MySql(p) = t.db.pool() else {
        panic!("MariaDB only")
    };
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT `TABLE_NAME`, CAST(COUNT(*) AS SIGNED) FROM `information_schema`.`COLUMNS` WHERE `TABLE_SCHEMA` = DATABASE() \
         GROUP BY `TABLE_NAME` ORDER BY `TABLE_NAME`",
    )
    .fetch_all(p)
    .await
    .expect("column counts");
    rows
}

/// A database made from VCL's own definitions (tests/fixtures/vcl-subset.mysql.sql: VCL's
/// column types, latin1, extra columns, VCL's seed ids, load-state ids unlike a fresh
/// install's): init verifies it, adds only provhost_* tables, and a request runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_vcl_database_only_gains_provhost_tables_mariadb() {
    let Some(t) = TestDb::empty(Backend::MySql).await else {
        return;
    };
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vcl-subset.mysql.sql"
    ))
    .expect("fixture");
    for stmt in fixture_statements(&fixture) {
        t.exec(&stmt).await;
    }
    let before = table_shapes(&t).await;
    let report = schema::init(&t.db, "ignored.test")
        .await
        .expect("init on an existing VCL database");
    assert!(!report.created_vcl_tables);
    assert_eq!(
        report.management_node, None,
        "an existing VCL database keeps its management nodes"
    );
    let after = table_shapes(&t).await;
    let added: Vec<&str> = after
        .iter()
        .filter(|a| !before.contains(a))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        added.iter().all(|t| t.starts_with("provhost_")),
        "only provhost tables are added: {added:?}"
    );
    assert_eq!(added, report.provhost_tables, "and init reports them");
    assert!(added.contains(&"provhost_claim"), "{added:?}");
    assert!(
        before.iter().all(|b| after.contains(b)),
        "VCL tables unchanged"
    );
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `state`").await, 29);

    // The site's own rows: a Linux image and a libvirt VM; provhost makes a request and
    // loads it into ctx.
    let created = requests::new_request(
        &t.db,
        &requests::NewRequest {
            image: "centos7-kvm".into(),
            computer: requests::ComputerChoice::Named("vm-01".into()),
            user: "ann".into(),
            start: None,
            end: Some("+2h".into()),
        },
    )
    .await
    .expect("request on a VCL database");
    assert_eq!(created.management_node, "mn.vcl.example");
    let data = provhost::db::reservation::load_reservation(&t.db, created.reservation_id)
        .await
        .expect("load");
    assert_eq!(data.computer_provisioning_module, "libvirt");
    assert_eq!(data.image_os_module, "linux");
    assert_eq!(data.image_name, "centos7-kvm-v3");
    assert_eq!(data.vmhost_hostname, "kvmhost1.vcl.example");
    assert_eq!(data.vmprofile_datastore_path, "/var/lib/libvirt/images");
    assert_eq!(data.user_login_id, "ann");
    provhost::db::loadlog::loadlog(
        &t.db,
        data.reservation_id,
        data.computer_id,
        "begin",
        "on a VCL database",
    )
    .await
    .expect("loadlog");
    // VCL's tables are latin1: characters it cannot hold become `?`, the entry is kept.
    provhost::db::loadlog::loadlog(
        &t.db,
        data.reservation_id,
        data.computer_id,
        "info",
        "step 1 → 2 ✓ (Müller)",
    )
    .await
    .expect("loadlog with non-latin1 text");
    let log = provhost::db::loadlog::timeline(&t.db, data.reservation_id)
        .await
        .expect("timeline");
    assert_eq!(log[0].loadstatename, "begin");
    assert_eq!(log[0].prettyname, "beginning to process reservation");
    assert_eq!(log[1].additionalinfo, "step 1 ? 2 ? (Müller)");

    // A failure whose message latin1 cannot hold is still recorded.
    let mn = provhost::db::inventory::management_node_id(&t.db, "mn.vcl.example")
        .await
        .expect("mn");
    provhost::db::claim::claim(&t.db, data.request_id, "new", mn)
        .await
        .expect("claim")
        .expect("won");
    let ids = provhost::db::state::Ids::from(&data);
    provhost::db::state::reservation_failed(&t.db, ids, "load failed ✗", "failed")
        .await
        .expect("failed");
    assert_eq!(
        provhost::db::state::request_state(&t.db, data.request_id)
            .await
            .expect("state"),
        Some(("failed".to_string(), "new".to_string()))
    );
    let log = provhost::db::loadlog::timeline(&t.db, data.reservation_id)
        .await
        .expect("timeline");
    assert!(
        log.iter()
            .any(|e| e.loadstatename == "failed" && e.additionalinfo == "load failed ?"),
        "{log:?}"
    );
    assert_eq!(
        t.scalar("SELECT `loadstateid` FROM `computerloadlog` ORDER BY `id` LIMIT 1")
            .await,
        249,
        "load state looked up by name, not by a fresh install's id"
    );
}

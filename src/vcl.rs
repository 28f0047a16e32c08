//! VCL's fixed vocabulary: the `state` table (ids and names) and the `computerloadstate`
//! names with their pretty names, exactly as Apache VCL seeds them.
//!
//! The database seeds its tables from these lists, and load-log calls are checked against
//! them, so a misspelt load-state name is an error everywhere, with or without a database.

/// `state.id` of `pending`: a request a daemon has claimed and is working on.
pub const PENDING: i64 = 14;

/// `state` rows: (id, name). VCL looks these up by id in code, so the ids are fixed.
pub const STATES: &[(i64, &str)] = &[
    (1, "deleted"),
    (2, "available"),
    (3, "reserved"),
    (4, "classreserved"),
    (5, "failed"),
    (6, "reloading"),
    (7, "imageinuse"),
    (8, "inuse"),
    (9, "cleaning"),
    (10, "maintenance"),
    (11, "timeout"),
    (12, "complete"),
    (13, "new"),
    (14, "pending"),
    (15, "imageprep"),
    (16, "image"),
    (17, "makeproduction"),
    (18, "tomaintenance"),
    (19, "reload"),
    (20, "vmhostinuse"),
    (21, "tovmhostinuse"),
    (22, "tohpc"),
    (23, "hpc"),
    (24, "checkpoint"),
    (25, "serverinuse"),
    (26, "rebootsoft"),
    (27, "reinstall"),
    (28, "reboothard"),
    (29, "servermodified"),
];

/// `computerloadstate` rows in VCL's insertion order: (loadstatename, prettyname).
/// The ids are whatever the database assigned; look rows up by name.
pub const LOAD_STATES: &[(&str, &str)] = &[
    ("info", "info"),
    ("loadimageblade", "must reload computer"),
    ("loadimagevmware", "loadimagevmware"),
    ("statuscheck", "computer status check"),
    ("assign2project", "changing VLAN setting"),
    ("rinstall", "starting install process"),
    ("dynamicDHCPaddress", "detecting dynamic IP address"),
    ("staticIPaddress", "setting static IP address"),
    ("loadimagecomplete", "running post configuration"),
    ("loadimagefailed", "preparing computer failed"),
    ("failed", "reservation failed"),
    ("bootstate", "image loading"),
    ("editnodetype", "edit config file to load requested image"),
    ("xcatstage1", "detected dhcp request from node"),
    ("xcatstage2", "rebooting node for reinstall"),
    ("WARNING", "WARNING"),
    ("xcatREADY", "computer reported READY starting post configs"),
    ("reserved", "ready for Connect"),
    (
        "xcatstage3",
        "node starting to received install instructions",
    ),
    ("xcatstage4", "node received install instructions"),
    ("xcatstage5", "starting reload process"),
    ("doesimageexists", "confirming image exists locally"),
    ("vmround1", "vmround1"),
    ("vmround2", "vmround2"),
    ("transfervm", "transferring image files to host server"),
    ("vmsetupconfig", "creating configuration file"),
    ("vmstage1", "detected stage 1 of 5 loading process"),
    ("vmstage2", "detected stage 2 of 5 loading process"),
    ("vmstage3", "detected stage 3 of 4 loading process"),
    ("xcatround2", "waiting for image loading to complete"),
    ("xcatround3", "loaded - start post configuration"),
    ("xcatround1", "xcatround1"),
    ("timeout", "timeout"),
    ("vmwareready", "machine online"),
    ("startload", "starting load process"),
    ("addinguser", "adding user account"),
    ("connected", "detected user connection"),
    ("nodeready", "resource ready"),
    ("inuseend10", "10 minute warning"),
    ("inuseend5", "5 minute warning"),
    ("machinebooted", "machine booting"),
    ("checklabstatus", "checklabstatus"),
    ("startvm", "starting virtual machine"),
    ("vmstage5", "vmstage5"),
    ("vmconfigcopy", "vmconfigcopy"),
    ("imageloadcomplete", "node ready to add user"),
    ("repeat", "repeat"),
    ("deleted", "deleted"),
    ("begin", "beginning to process reservation"),
    ("exited", "vcld process exited"),
    ("acknowledgetimeout", "start acknowledge timeout"),
    (
        "noinitialconnection",
        "initial user connection not detected",
    ),
    ("initialconnecttimeout", "initialconnecttimeout"),
    ("reconnecttimeout", "reconnecttimeout"),
    ("copyfrompartnerMN", "copyfrompartnerMN"),
    ("postreserve", "post reserve completed"),
];

/// Is `name` one of VCL's `computerloadstate.loadstatename` values? (Exact, case-sensitive,
/// as VCL's lookup is.)
/// `log.ending` values (the column's enum): how a request ended, as vcld and the web
/// front end record it.
pub const LOG_ENDINGS: &[&str] = &[
    "deleted",
    "released",
    "failed",
    "failedtest",
    "noack",
    "nologin",
    "timeout",
    "EOR",
    "none",
];

pub fn is_load_state(name: &str) -> bool {
    LOAD_STATES.iter().any(|(n, _)| *n == name)
}

/// The id of a `state` row by name.
pub fn state_id(name: &str) -> Option<i64> {
    STATES.iter().find(|(_, n)| *n == name).map(|(id, _)| *id)
}

/// The name of a `state` row by id.
pub fn state_name(id: i64) -> Option<&'static str> {
    STATES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcl_ids_and_names_line_up() {
        assert_eq!(STATES.len(), 29);
        assert_eq!(state_id("pending"), Some(14));
        assert_eq!(state_id("pending"), Some(PENDING));
        assert_eq!(state_name(19), Some("reload"));
        assert_eq!(LOAD_STATES.len(), 56);
        assert_eq!(LOAD_STATES[17].0, "reserved");
        assert!(is_load_state("copyfrompartnerMN"));
        assert!(!is_load_state("copyfrompartnermn"));
    }
}

-- provhost: the VCL tables provhost reads and writes, for a fresh SQLite database.
-- Same table and column names as the MySQL/MariaDB file beside this one (and as Apache VCL);
-- SQLite types: INTEGER for VCL's integer and flag columns, TEXT for strings, enums (with a
-- CHECK) and datetimes ('YYYY-MM-DD HH:MM:SS', local time, as MySQL's NOW() gives them).
-- Statements are separated by a line that ends with `;`.

CREATE TABLE `state` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL DEFAULT '' UNIQUE
);

CREATE TABLE `computerloadstate` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `loadstatename` TEXT NOT NULL UNIQUE,
  `prettyname` TEXT DEFAULT NULL,
  `est` INTEGER DEFAULT NULL
);

CREATE TABLE `computerloadlog` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `reservationid` INTEGER NOT NULL,
  `computerid` INTEGER NOT NULL,
  `loadstateid` INTEGER NOT NULL,
  `timestamp` TEXT DEFAULT NULL,
  `additionalinfo` TEXT
);
CREATE INDEX `computerloadlog_reservationid` ON `computerloadlog` (`reservationid`);

CREATE TABLE `affiliation` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL UNIQUE,
  `dataUpdateText` TEXT NOT NULL DEFAULT ''
);

CREATE TABLE `user` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `uid` INTEGER DEFAULT NULL UNIQUE,
  `unityid` TEXT NOT NULL DEFAULT '',
  `affiliationid` INTEGER NOT NULL DEFAULT 1,
  `firstname` TEXT NOT NULL DEFAULT '',
  `lastname` TEXT NOT NULL DEFAULT '',
  `email` TEXT NOT NULL DEFAULT '',
  `lastupdated` TEXT DEFAULT NULL,
  `usepublickeys` INTEGER NOT NULL DEFAULT 0,
  `sshpublickeys` TEXT,
  UNIQUE (`unityid`, `affiliationid`)
);

CREATE TABLE `module` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL UNIQUE,
  `prettyname` TEXT NOT NULL,
  `description` TEXT NOT NULL DEFAULT '',
  `perlpackage` TEXT NOT NULL DEFAULT ''
);

CREATE TABLE `provisioning` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL UNIQUE,
  `prettyname` TEXT NOT NULL,
  `moduleid` INTEGER NOT NULL
);

CREATE TABLE `OStype` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL UNIQUE
);

CREATE TABLE `OS` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL UNIQUE,
  `prettyname` TEXT NOT NULL DEFAULT '' UNIQUE,
  `type` TEXT NOT NULL,
  `installtype` TEXT NOT NULL DEFAULT 'image',
  `minram` INTEGER NOT NULL DEFAULT 512,
  `sourcepath` TEXT DEFAULT NULL,
  `moduleid` INTEGER DEFAULT NULL
);

CREATE TABLE `image` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL DEFAULT '' UNIQUE,
  `prettyname` TEXT NOT NULL DEFAULT '' UNIQUE,
  `ownerid` INTEGER DEFAULT 1,
  `OSid` INTEGER NOT NULL DEFAULT 0,
  `reloadtime` INTEGER NOT NULL DEFAULT 10,
  `deleted` INTEGER NOT NULL DEFAULT 0,
  `lastupdate` TEXT DEFAULT NULL,
  `size` INTEGER NOT NULL DEFAULT 0 CHECK (`size` BETWEEN 0 AND 65535),
  `architecture` TEXT NOT NULL DEFAULT 'x86_64' CHECK (`architecture` IN ('x86', 'x86_64')),
  `imagemetaid` INTEGER DEFAULT NULL
);

CREATE TABLE `imagemeta` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `checkuser` INTEGER NOT NULL DEFAULT 1,
  `rootaccess` INTEGER NOT NULL DEFAULT 1,
  `sethostname` INTEGER DEFAULT NULL
);

CREATE TABLE `imagerevision` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `imageid` INTEGER NOT NULL,
  `revision` INTEGER NOT NULL,
  `userid` INTEGER NOT NULL,
  `datecreated` TEXT NOT NULL,
  `deleted` INTEGER NOT NULL DEFAULT 0,
  `datedeleted` TEXT DEFAULT NULL,
  `production` INTEGER NOT NULL DEFAULT 0,
  `comments` TEXT,
  `imagename` TEXT NOT NULL,
  `autocaptured` INTEGER NOT NULL DEFAULT 0,
  UNIQUE (`imageid`, `revision`)
);

CREATE TABLE `managementnode` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `IPaddress` TEXT NOT NULL DEFAULT '',
  `hostname` TEXT NOT NULL DEFAULT '' UNIQUE,
  `ownerid` INTEGER NOT NULL DEFAULT 1,
  `stateid` INTEGER NOT NULL DEFAULT 2,
  `lastcheckin` TEXT DEFAULT NULL,
  `checkininterval` INTEGER NOT NULL DEFAULT 12,
  `installpath` TEXT NOT NULL DEFAULT '/install',
  `keys` TEXT DEFAULT NULL,
  `sshport` INTEGER NOT NULL DEFAULT 22,
  `publicIPconfiguration` TEXT NOT NULL DEFAULT 'dynamicDHCP'
    CHECK (`publicIPconfiguration` IN ('dynamicDHCP', 'manualDHCP', 'static'))
);

CREATE TABLE `vmprofile` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `profilename` TEXT NOT NULL UNIQUE,
  `imageid` INTEGER NOT NULL DEFAULT 1,
  `repositorypath` TEXT DEFAULT NULL,
  `datastorepath` TEXT NOT NULL DEFAULT '',
  `vmpath` TEXT DEFAULT NULL,
  `virtualswitch0` TEXT NOT NULL DEFAULT 'br0',
  `virtualswitch1` TEXT NOT NULL DEFAULT 'br1',
  `vmdisk` TEXT NOT NULL DEFAULT 'dedicated' CHECK (`vmdisk` IN ('dedicated', 'shared')),
  `username` TEXT DEFAULT NULL,
  `password` TEXT DEFAULT NULL
);

CREATE TABLE `vmhost` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `computerid` INTEGER NOT NULL,
  `vmprofileid` INTEGER NOT NULL,
  UNIQUE (`computerid`, `vmprofileid`)
);

CREATE TABLE `computer` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `stateid` INTEGER NOT NULL DEFAULT 10,
  `ownerid` INTEGER DEFAULT 1,
  `vmhostid` INTEGER DEFAULT NULL,
  `currentimageid` INTEGER NOT NULL DEFAULT 1,
  `nextimageid` INTEGER NOT NULL DEFAULT 1,
  `imagerevisionid` INTEGER NOT NULL DEFAULT 1,
  `RAM` INTEGER NOT NULL DEFAULT 0,
  `procnumber` INTEGER NOT NULL DEFAULT 1,
  `hostname` TEXT NOT NULL DEFAULT '',
  `IPaddress` TEXT NOT NULL DEFAULT '',
  `privateIPaddress` TEXT DEFAULT NULL,
  `eth0macaddress` TEXT DEFAULT NULL,
  `eth1macaddress` TEXT DEFAULT NULL,
  `type` TEXT NOT NULL DEFAULT 'blade' CHECK (`type` IN ('blade', 'lab', 'virtualmachine')),
  `provisioningid` INTEGER NOT NULL,
  `deleted` INTEGER NOT NULL DEFAULT 0,
  `datedeleted` TEXT DEFAULT NULL,
  `notes` TEXT,
  `lastcheck` TEXT DEFAULT NULL,
  `predictivemoduleid` INTEGER NOT NULL DEFAULT 8,
  UNIQUE (`hostname`, `datedeleted`)
);

CREATE TABLE `request` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `stateid` INTEGER NOT NULL DEFAULT 0,
  `userid` INTEGER NOT NULL DEFAULT 0,
  `laststateid` INTEGER NOT NULL DEFAULT 0,
  `logid` INTEGER DEFAULT NULL,
  `forimaging` INTEGER NOT NULL DEFAULT 0,
  `test` INTEGER NOT NULL DEFAULT 0,
  `preload` INTEGER NOT NULL DEFAULT 0,
  `start` TEXT NOT NULL,
  `end` TEXT NOT NULL,
  `daterequested` TEXT NOT NULL,
  `datemodified` TEXT DEFAULT NULL,
  `checkuser` INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX `request_stateid` ON `request` (`stateid`);

CREATE TABLE `reservation` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `requestid` INTEGER NOT NULL DEFAULT 0,
  `computerid` INTEGER NOT NULL DEFAULT 0,
  `imageid` INTEGER NOT NULL DEFAULT 0,
  `imagerevisionid` INTEGER NOT NULL DEFAULT 0,
  `managementnodeid` INTEGER NOT NULL DEFAULT 1,
  `remoteIP` TEXT DEFAULT NULL,
  `lastcheck` TEXT DEFAULT NULL,
  `pw` TEXT DEFAULT NULL,
  `connectIP` TEXT DEFAULT NULL,
  `connectport` INTEGER DEFAULT NULL
);
CREATE INDEX `reservation_requestid` ON `reservation` (`requestid`);
CREATE INDEX `reservation_computerid` ON `reservation` (`computerid`);

-- What VCL's web front end reads beside the tables above (docs/database.md, "Running beside
-- VCL's web front end"): resources, the per-request `log` and per-reservation `sublog` rows
-- with the `changelog`, and the `variable` table VCL keeps its timings in.

CREATE TABLE `resourcetype` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL DEFAULT '' UNIQUE
);

CREATE TABLE `resource` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `resourcetypeid` INTEGER NOT NULL DEFAULT 0,
  `subid` INTEGER NOT NULL DEFAULT 0,
  UNIQUE (`resourcetypeid`, `subid`)
);

CREATE TABLE `log` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `userid` INTEGER NOT NULL DEFAULT 0,
  `nowfuture` TEXT NOT NULL DEFAULT 'now' CHECK (`nowfuture` IN ('now', 'future')),
  `start` TEXT NOT NULL,
  `loaded` TEXT DEFAULT NULL,
  `initialend` TEXT NOT NULL,
  `finalend` TEXT NOT NULL,
  `wasavailable` INTEGER NOT NULL DEFAULT 0,
  `ending` TEXT NOT NULL DEFAULT 'none'
    CHECK (`ending` IN ('deleted', 'released', 'failed', 'failedtest', 'noack', 'nologin', 'timeout', 'EOR', 'none')),
  `requestid` INTEGER DEFAULT NULL,
  `computerid` INTEGER DEFAULT NULL,
  `remoteIP` TEXT DEFAULT NULL,
  `imageid` INTEGER NOT NULL DEFAULT 0,
  `size` INTEGER NOT NULL DEFAULT 1450
);

CREATE TABLE `sublog` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `logid` INTEGER NOT NULL DEFAULT 0,
  `imageid` INTEGER NOT NULL DEFAULT 0,
  `imagerevisionid` INTEGER NOT NULL,
  `computerid` INTEGER NOT NULL DEFAULT 0,
  `IPaddress` TEXT DEFAULT NULL,
  `managementnodeid` INTEGER NOT NULL DEFAULT 0,
  `predictivemoduleid` INTEGER NOT NULL DEFAULT 8,
  `hostcomputerid` INTEGER DEFAULT NULL,
  `blockRequestid` INTEGER DEFAULT NULL,
  `blockStart` TEXT DEFAULT NULL,
  `blockEnd` TEXT DEFAULT NULL
);
CREATE INDEX `sublog_logid` ON `sublog` (`logid`);

CREATE TABLE `changelog` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `logid` INTEGER NOT NULL DEFAULT 0,
  `userid` INTEGER DEFAULT NULL,
  `reservationid` INTEGER DEFAULT NULL,
  `start` TEXT DEFAULT NULL,
  `end` TEXT DEFAULT NULL,
  `computerid` INTEGER DEFAULT NULL,
  `remoteIP` TEXT DEFAULT NULL,
  `wasavailable` INTEGER DEFAULT NULL,
  `timestamp` TEXT NOT NULL,
  `other` TEXT DEFAULT NULL
);
CREATE INDEX `changelog_logid` ON `changelog` (`logid`);

CREATE TABLE `variable` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `name` TEXT NOT NULL UNIQUE,
  `serialization` TEXT NOT NULL DEFAULT 'none' CHECK (`serialization` IN ('none', 'yaml', 'phpserialize')),
  `value` TEXT NOT NULL,
  `setby` TEXT DEFAULT NULL,
  `timestamp` TEXT NOT NULL
);

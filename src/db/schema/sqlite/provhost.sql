-- provhost-only tables (SQLite). Created on every `provhost db init`, also on an existing
-- VCL database, so each statement must be safe to run again.

CREATE TABLE IF NOT EXISTS `provhost_schema` (
  `version` INTEGER PRIMARY KEY,
  `applied` TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS `provhost_computer` (
  `computerid` INTEGER PRIMARY KEY,
  `sshport` INTEGER NOT NULL DEFAULT 22,
  `managementnodeid` INTEGER DEFAULT NULL
);

CREATE TABLE IF NOT EXISTS `provhost_claim` (
  `requestid` INTEGER PRIMARY KEY,
  `managementnodeid` INTEGER NOT NULL,
  `token` TEXT NOT NULL,
  `fromstateid` INTEGER NOT NULL,
  `priorlaststateid` INTEGER DEFAULT NULL,
  `claimed` TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS `provhost_computervar` (
  `computerid` INTEGER NOT NULL,
  `name` TEXT NOT NULL,
  `value` TEXT NOT NULL,
  PRIMARY KEY (`computerid`, `name`)
);

-- Which reservation holds a computer (docs/daemon.md, "One reservation per computer").
CREATE TABLE IF NOT EXISTS `provhost_computerlock` (
  `computerid` INTEGER PRIMARY KEY,
  `requestid` INTEGER NOT NULL,
  `reservationid` INTEGER NOT NULL,
  `managementnodeid` INTEGER NOT NULL,
  `token` TEXT NOT NULL,
  `locked` TEXT NOT NULL
);

-- Which daemon owns a management node (docs/daemon.md, "One live owner per node"): one
-- row per node; `holder` is the owning process's unique id, `expires` is renewed by its
-- heartbeat. Another daemon may take the node only once `expires` has passed.
CREATE TABLE IF NOT EXISTS `provhost_nodelease` (
  `managementnodeid` INTEGER PRIMARY KEY,
  `holder` TEXT NOT NULL,
  `host` TEXT NOT NULL,
  `pid` INTEGER NOT NULL,
  `acquired` TEXT NOT NULL,
  `heartbeat` TEXT NOT NULL,
  `expires` TEXT NOT NULL
);

-- The waterfall: every routine call and every command and copy it made, per reservation
-- (written in one batch per routine call; pruned by age and count, `[trace]`).
CREATE TABLE IF NOT EXISTS `provhost_span` (
  `id` INTEGER PRIMARY KEY AUTOINCREMENT,
  `reservationid` INTEGER NOT NULL,
  `kind` TEXT NOT NULL,
  `module` TEXT NOT NULL,
  `routine` TEXT NOT NULL,
  `host` TEXT NOT NULL,
  `detail` TEXT NOT NULL,
  `exitcode` INTEGER,
  `bytes` INTEGER,
  `startms` INTEGER NOT NULL,
  `durationms` INTEGER NOT NULL,
  `ok` INTEGER NOT NULL,
  `error` TEXT
);
CREATE INDEX IF NOT EXISTS `provhost_span_reservation` ON `provhost_span` (`reservationid`, `startms`);
CREATE INDEX IF NOT EXISTS `provhost_span_start` ON `provhost_span` (`startms`);

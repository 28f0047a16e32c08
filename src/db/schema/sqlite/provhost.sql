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

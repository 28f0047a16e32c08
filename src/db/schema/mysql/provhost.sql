-- provhost-only tables (MySQL/MariaDB). Created on every `provhost db init`, also on an
-- existing VCL database, so each statement must be safe to run again.

CREATE TABLE IF NOT EXISTS `provhost_schema` (
  `version` int(10) unsigned NOT NULL,
  `applied` datetime NOT NULL,
  PRIMARY KEY (`version`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `provhost_computer` (
  `computerid` smallint(5) unsigned NOT NULL,
  `sshport` smallint(5) unsigned NOT NULL DEFAULT 22,
  `managementnodeid` smallint(5) unsigned DEFAULT NULL,
  PRIMARY KEY (`computerid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `provhost_claim` (
  `requestid` mediumint(8) unsigned NOT NULL,
  `managementnodeid` smallint(5) unsigned NOT NULL,
  `token` varchar(64) NOT NULL,
  `fromstateid` tinyint(3) unsigned NOT NULL,
  `priorlaststateid` tinyint(3) unsigned DEFAULT NULL,
  `claimed` datetime NOT NULL,
  PRIMARY KEY (`requestid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `provhost_computervar` (
  `computerid` smallint(5) unsigned NOT NULL,
  `name` varchar(64) NOT NULL,
  `value` text NOT NULL,
  PRIMARY KEY (`computerid`, `name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Which reservation holds a computer (docs/daemon.md, "One reservation per computer").
CREATE TABLE IF NOT EXISTS `provhost_computerlock` (
  `computerid` smallint(5) unsigned NOT NULL,
  `requestid` mediumint(8) unsigned NOT NULL,
  `reservationid` mediumint(8) unsigned NOT NULL,
  `managementnodeid` smallint(5) unsigned NOT NULL,
  `token` varchar(64) NOT NULL,
  `locked` datetime NOT NULL,
  PRIMARY KEY (`computerid`),
  KEY `requestid` (`requestid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Which daemon owns a management node (docs/daemon.md, "One live owner per node"): one
-- row per node; `holder` is the owning process's unique id, `expires` is renewed by its
-- heartbeat. Another daemon may take the node only once `expires` has passed.
CREATE TABLE IF NOT EXISTS `provhost_nodelease` (
  `managementnodeid` smallint(5) unsigned NOT NULL,
  `holder` varchar(128) NOT NULL,
  `host` varchar(255) NOT NULL,
  `pid` int(10) unsigned NOT NULL,
  `acquired` datetime NOT NULL,
  `heartbeat` datetime NOT NULL,
  `expires` datetime NOT NULL,
  PRIMARY KEY (`managementnodeid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The waterfall: every routine call and every command and copy it made, per reservation
-- (written in one batch per routine call; pruned by age and count, `[trace]`).
CREATE TABLE IF NOT EXISTS `provhost_span` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `reservationid` mediumint(8) unsigned NOT NULL,
  `kind` varchar(16) NOT NULL,
  `module` varchar(255) NOT NULL,
  `routine` varchar(255) NOT NULL,
  `host` varchar(255) NOT NULL,
  `detail` text NOT NULL,
  `exitcode` bigint(20) DEFAULT NULL,
  `bytes` bigint(20) unsigned DEFAULT NULL,
  `startms` bigint(20) NOT NULL,
  `durationms` bigint(20) NOT NULL,
  `ok` tinyint(1) NOT NULL,
  `error` text,
  PRIMARY KEY (`id`),
  KEY `provhost_span_reservation` (`reservationid`, `startms`),
  KEY `provhost_span_start` (`startms`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

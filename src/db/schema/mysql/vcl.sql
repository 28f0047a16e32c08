-- provhost: the VCL tables provhost reads and writes, for a fresh MySQL/MariaDB database.
-- Names follow Apache VCL's schema; only the columns provhost uses are created (an existing
-- VCL database has more, which provhost leaves alone). Seed rows for `state` and
-- `computerloadstate` come from src/vcl.rs and are inserted by db::schema.
-- Statements are separated by a line that ends with `;`.

CREATE TABLE `state` (
  `id` tinyint(3) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(20) NOT NULL DEFAULT '',
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `computerloadstate` (
  `id` smallint(8) unsigned NOT NULL AUTO_INCREMENT,
  `loadstatename` varchar(24) NOT NULL,
  `prettyname` varchar(50) DEFAULT NULL,
  `est` tinyint(2) unsigned DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `loadstatename` (`loadstatename`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `computerloadlog` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `reservationid` mediumint(8) unsigned NOT NULL,
  `computerid` smallint(8) unsigned NOT NULL,
  `loadstateid` smallint(8) unsigned NOT NULL,
  `timestamp` datetime DEFAULT NULL,
  `additionalinfo` text,
  PRIMARY KEY (`id`),
  KEY `reservationid` (`reservationid`),
  KEY `computerid` (`computerid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `affiliation` (
  `id` mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(40) NOT NULL,
  `dataUpdateText` text NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `user` (
  `id` mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  `uid` int(10) unsigned DEFAULT NULL,
  `unityid` varchar(80) NOT NULL DEFAULT '',
  `affiliationid` mediumint(8) unsigned NOT NULL DEFAULT 1,
  `firstname` varchar(20) NOT NULL DEFAULT '',
  `lastname` varchar(25) NOT NULL DEFAULT '',
  `email` varchar(80) NOT NULL DEFAULT '',
  `lastupdated` datetime DEFAULT NULL,
  `usepublickeys` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `sshpublickeys` text,
  PRIMARY KEY (`id`),
  UNIQUE KEY `unityid` (`unityid`, `affiliationid`),
  UNIQUE KEY `uid` (`uid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `module` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(30) NOT NULL,
  `prettyname` varchar(70) NOT NULL,
  `description` varchar(255) NOT NULL DEFAULT '',
  `perlpackage` varchar(150) NOT NULL DEFAULT '',
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `provisioning` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(30) NOT NULL,
  `prettyname` varchar(70) NOT NULL,
  `moduleid` smallint(5) unsigned NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `OStype` (
  `id` tinyint(3) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(30) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `OS` (
  `id` tinyint(3) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(20) NOT NULL,
  `prettyname` varchar(64) NOT NULL DEFAULT '',
  `type` varchar(30) NOT NULL,
  `installtype` varchar(30) NOT NULL DEFAULT 'image',
  `minram` mediumint(8) unsigned NOT NULL DEFAULT 512,
  `sourcepath` varchar(30) DEFAULT NULL,
  `moduleid` smallint(5) unsigned DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`),
  UNIQUE KEY `prettyname` (`prettyname`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `image` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(70) NOT NULL DEFAULT '',
  `prettyname` varchar(80) NOT NULL DEFAULT '',
  `ownerid` mediumint(8) unsigned DEFAULT 1,
  `OSid` tinyint(3) unsigned NOT NULL DEFAULT 0,
  `reloadtime` tinyint(3) unsigned NOT NULL DEFAULT 10,
  `deleted` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `lastupdate` datetime DEFAULT NULL,
  `size` smallint(5) unsigned NOT NULL DEFAULT 0,
  `architecture` enum('x86','x86_64') NOT NULL DEFAULT 'x86_64',
  `imagemetaid` smallint(5) unsigned DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`),
  UNIQUE KEY `prettyname` (`prettyname`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `imagemeta` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `checkuser` tinyint(1) unsigned NOT NULL DEFAULT 1,
  `rootaccess` tinyint(1) unsigned NOT NULL DEFAULT 1,
  `sethostname` tinyint(1) unsigned DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `imagerevision` (
  `id` mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  `imageid` smallint(5) unsigned NOT NULL,
  `revision` smallint(5) unsigned NOT NULL,
  `userid` mediumint(8) unsigned NOT NULL,
  `datecreated` datetime NOT NULL,
  `deleted` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `datedeleted` datetime DEFAULT NULL,
  `production` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `comments` text,
  `imagename` varchar(75) NOT NULL,
  `autocaptured` tinyint(1) unsigned NOT NULL DEFAULT 0,
  PRIMARY KEY (`id`),
  UNIQUE KEY `imageid` (`imageid`, `revision`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `managementnode` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `IPaddress` varchar(15) NOT NULL DEFAULT '',
  `hostname` varchar(50) NOT NULL DEFAULT '',
  `ownerid` mediumint(8) unsigned NOT NULL DEFAULT 1,
  `stateid` tinyint(3) unsigned NOT NULL DEFAULT 2,
  `lastcheckin` datetime DEFAULT NULL,
  `checkininterval` tinyint(3) unsigned NOT NULL DEFAULT 12,
  `installpath` varchar(100) NOT NULL DEFAULT '/install',
  `keys` varchar(1024) DEFAULT NULL,
  `sshport` smallint(5) unsigned NOT NULL DEFAULT 22,
  `publicIPconfiguration` enum('dynamicDHCP','manualDHCP','static') NOT NULL DEFAULT 'dynamicDHCP',
  PRIMARY KEY (`id`),
  UNIQUE KEY `hostname` (`hostname`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `vmprofile` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `profilename` varchar(56) NOT NULL,
  `imageid` smallint(5) unsigned NOT NULL DEFAULT 1,
  `repositorypath` varchar(128) DEFAULT NULL,
  `datastorepath` varchar(128) NOT NULL DEFAULT '',
  `vmpath` varchar(128) DEFAULT NULL,
  `virtualswitch0` varchar(80) NOT NULL DEFAULT 'br0',
  `virtualswitch1` varchar(80) NOT NULL DEFAULT 'br1',
  `vmdisk` enum('dedicated','shared') NOT NULL DEFAULT 'dedicated',
  `username` varchar(80) DEFAULT NULL,
  `password` varchar(256) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `profilename` (`profilename`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `vmhost` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `computerid` smallint(5) unsigned NOT NULL,
  `vmprofileid` smallint(5) unsigned NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `computerid_vmprofileid` (`computerid`, `vmprofileid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `computer` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `stateid` tinyint(5) unsigned NOT NULL DEFAULT 10,
  `ownerid` mediumint(8) unsigned DEFAULT 1,
  `vmhostid` smallint(5) unsigned DEFAULT NULL,
  `currentimageid` smallint(5) unsigned NOT NULL DEFAULT 1,
  `nextimageid` smallint(5) unsigned NOT NULL DEFAULT 1,
  `imagerevisionid` mediumint(8) unsigned NOT NULL DEFAULT 1,
  `RAM` mediumint(8) unsigned NOT NULL DEFAULT 0,
  `procnumber` tinyint(5) unsigned NOT NULL DEFAULT 1,
  `hostname` varchar(36) NOT NULL DEFAULT '',
  `IPaddress` varchar(15) NOT NULL DEFAULT '',
  `privateIPaddress` varchar(15) DEFAULT NULL,
  `eth0macaddress` varchar(17) DEFAULT NULL,
  `eth1macaddress` varchar(17) DEFAULT NULL,
  `type` enum('blade','lab','virtualmachine') NOT NULL DEFAULT 'blade',
  `provisioningid` smallint(5) unsigned NOT NULL,
  `deleted` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `datedeleted` datetime DEFAULT NULL,
  `notes` text,
  `lastcheck` datetime DEFAULT NULL,
  `predictivemoduleid` smallint(5) unsigned NOT NULL DEFAULT 8,
  PRIMARY KEY (`id`),
  UNIQUE KEY `hostname` (`hostname`, `datedeleted`),
  KEY `stateid` (`stateid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `request` (
  `id` mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  `stateid` tinyint(3) unsigned NOT NULL DEFAULT 0,
  `userid` mediumint(8) unsigned NOT NULL DEFAULT 0,
  `laststateid` tinyint(3) unsigned NOT NULL DEFAULT 0,
  `logid` int(10) unsigned DEFAULT NULL,
  `forimaging` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `test` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `preload` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `start` datetime NOT NULL,
  `end` datetime NOT NULL,
  `daterequested` datetime NOT NULL,
  `datemodified` datetime DEFAULT NULL,
  `checkuser` tinyint(1) unsigned NOT NULL DEFAULT 1,
  PRIMARY KEY (`id`),
  KEY `stateid` (`stateid`),
  KEY `userid` (`userid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `reservation` (
  `id` mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  `requestid` mediumint(8) unsigned NOT NULL DEFAULT 0,
  `computerid` smallint(5) unsigned NOT NULL DEFAULT 0,
  `imageid` smallint(5) unsigned NOT NULL DEFAULT 0,
  `imagerevisionid` mediumint(8) unsigned NOT NULL DEFAULT 0,
  `managementnodeid` smallint(5) unsigned NOT NULL DEFAULT 1,
  `remoteIP` varchar(15) DEFAULT NULL,
  `lastcheck` datetime DEFAULT NULL,
  `pw` varchar(40) DEFAULT NULL,
  `connectIP` varchar(15) DEFAULT NULL,
  `connectport` smallint(5) unsigned DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `requestid` (`requestid`),
  KEY `computerid` (`computerid`),
  KEY `managementnodeid` (`managementnodeid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- What VCL's web front end reads beside the tables above (docs/database.md, "Running beside
-- VCL's web front end"): resources (the web inner-joins `resource` to list images and
-- computers), the per-request `log` and per-reservation `sublog` rows with the `changelog`,
-- and the `variable` table VCL keeps its timings in.

CREATE TABLE `resourcetype` (
  `id` tinyint(5) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(50) NOT NULL DEFAULT '',
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `resource` (
  `id` mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  `resourcetypeid` tinyint(5) unsigned NOT NULL DEFAULT 0,
  `subid` mediumint(8) unsigned NOT NULL DEFAULT 0,
  PRIMARY KEY (`id`),
  UNIQUE KEY `resourcetypeid` (`resourcetypeid`, `subid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `log` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `userid` mediumint(8) unsigned NOT NULL DEFAULT 0,
  `nowfuture` enum('now','future') NOT NULL DEFAULT 'now',
  `start` datetime NOT NULL,
  `loaded` datetime DEFAULT NULL,
  `initialend` datetime NOT NULL,
  `finalend` datetime NOT NULL,
  `wasavailable` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `ending` enum('deleted','released','failed','failedtest','noack','nologin','timeout','EOR','none') NOT NULL DEFAULT 'none',
  `requestid` mediumint(8) unsigned DEFAULT NULL,
  `computerid` smallint(5) unsigned DEFAULT NULL,
  `remoteIP` varchar(15) DEFAULT NULL,
  `imageid` smallint(5) unsigned NOT NULL DEFAULT 0,
  `size` smallint(5) unsigned NOT NULL DEFAULT 1450,
  PRIMARY KEY (`id`),
  KEY `userid` (`userid`),
  KEY `finalend` (`finalend`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `sublog` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `logid` int(10) unsigned NOT NULL DEFAULT 0,
  `imageid` smallint(5) unsigned NOT NULL DEFAULT 0,
  `imagerevisionid` mediumint(8) unsigned NOT NULL,
  `computerid` smallint(5) unsigned NOT NULL DEFAULT 0,
  `IPaddress` varchar(15) DEFAULT NULL,
  `managementnodeid` smallint(5) unsigned NOT NULL DEFAULT 0,
  `predictivemoduleid` smallint(5) unsigned NOT NULL DEFAULT 8,
  `hostcomputerid` smallint(5) unsigned DEFAULT NULL,
  `blockRequestid` mediumint(8) unsigned DEFAULT NULL,
  `blockStart` datetime DEFAULT NULL,
  `blockEnd` datetime DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `logid` (`logid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `changelog` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `logid` int(10) unsigned NOT NULL DEFAULT 0,
  `userid` mediumint(8) unsigned DEFAULT NULL,
  `reservationid` mediumint(8) unsigned DEFAULT NULL,
  `start` datetime DEFAULT NULL,
  `end` datetime DEFAULT NULL,
  `computerid` smallint(5) unsigned DEFAULT NULL,
  `remoteIP` varchar(15) DEFAULT NULL,
  `wasavailable` tinyint(1) unsigned DEFAULT NULL,
  `timestamp` datetime NOT NULL,
  `other` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `logid` (`logid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE `variable` (
  `id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(128) NOT NULL,
  `serialization` enum('none','yaml','phpserialize') NOT NULL DEFAULT 'none',
  `value` longtext NOT NULL,
  `setby` varchar(128) DEFAULT NULL,
  `timestamp` datetime NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

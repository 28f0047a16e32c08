-- Seed rows for a fresh provhost database (both backends; plain INSERTs). Ids are VCL's own
-- where VCL seeds the row, so scripts and sites that know VCL's ids find them. The `state`
-- and `computerloadstate` rows are inserted from src/vcl.rs, and the management node row
-- for this machine by db::schema. Rows marked (provhost) do not exist in VCL.

INSERT INTO `affiliation` (`id`, `name`, `dataUpdateText`) VALUES (1, 'Local', ''), (2, 'Global', '');

INSERT INTO `user` (`id`, `uid`, `unityid`, `affiliationid`, `firstname`, `lastname`, `email`) VALUES
  (1, NULL, 'admin', 1, 'vcl', 'admin', 'root@localhost'),
  (2, NULL, 'vclreload', 1, 'vcl', 'reload', ''),
  (3, NULL, 'vclsystem', 1, 'vcl', 'system', '');

INSERT INTO `module` (`id`, `name`, `prettyname`, `description`, `perlpackage`) VALUES
  (1, 'provisioning_xcat', 'xCAT Provisioning Module', '', 'VCL::Module::Provisioning::xCAT'),
  (3, 'provisioning_lab', 'Computing Lab Provisioning Module', '', 'VCL::Module::Provisioning::Lab'),
  (4, 'os_windows', 'Windows OS Module', '', 'VCL::Module::OS::Windows'),
  (5, 'os_linux', 'Linux OS Module', '', 'VCL::Module::OS::Linux'),
  (6, 'os_unix', 'Unix OS Module', '', 'VCL::Module::OS'),
  (8, 'predictive_level_0', 'Reload with last image', '', 'VCL::Module::Predictive::Level_0'),
  (14, 'os_linux_ubuntu', 'Ubuntu Linux OS Module', '', 'VCL::Module::OS::Linux::Ubuntu'),
  (15, 'os_unix_lab', 'Unix Lab OS Module', '', 'VCL::Module::OS::Linux::UnixLab'),
  (21, 'provisioning_vmware', 'VMware Provisioning Module', '', 'VCL::Module::Provisioning::VMware::VMware'),
  (23, 'base_module', 'VCL Base Module', '', 'VCL::Module'),
  (24, 'provisioning_vbox', 'Virtual Box Provisioning Module', '', 'VCL::Module::Provisioning::vbox'),
  (27, 'provisioning_libvirt', 'Libvirt Provisioning Module', '', 'VCL::Module::Provisioning::libvirt'),
  (32, 'provisioning_openstack', 'OpenStack Provisioning Module', '', 'VCL::Module::Provisioning::openstack'),
  (33, 'provisioning_one', 'OpenNebula Provisioning Module', '', 'VCL::Module::Provisioning::one'),
  (100, 'provisioning_qemu', 'QEMU Provisioning Module (provhost)', 'scripts/provisioning/qemu.rhai', ''),
  (101, 'provisioning_sim', 'Simulated Provisioning Module (provhost, no real machine)', 'scripts/provisioning/sim.rhai', ''),
  (102, 'os_sim', 'Simulated OS Module (provhost, no real machine)', 'scripts/os/sim.rhai', '');

INSERT INTO `provisioning` (`id`, `name`, `prettyname`, `moduleid`) VALUES
  (1, 'xcat', 'xCAT', 1),
  (3, 'lab', 'Computing Lab', 3),
  (7, 'vmware', 'VMware', 21),
  (8, 'vbox', 'Virtual Box', 24),
  (9, 'libvirt', 'Libvirt Virtualization API', 27),
  (10, 'none', 'None', 23),
  (11, 'openstack', 'openstack', 32),
  (12, 'one', 'OpenNebula', 33),
  (100, 'qemu', 'QEMU (provhost)', 100),
  (101, 'sim', 'Simulator (provhost)', 101);

INSERT INTO `OStype` (`id`, `name`) VALUES (1, 'windows'), (2, 'linux'), (3, 'unix'), (4, 'osx');

INSERT INTO `OS` (`id`, `name`, `prettyname`, `type`, `installtype`, `sourcepath`, `moduleid`) VALUES
  (2, 'sun4x_58', 'Solaris 5.8 (Lab)', 'unix', 'none', NULL, 15),
  (100, 'linux', 'Linux (provhost)', 'linux', 'image', NULL, 5),
  (101, 'windows', 'Windows (provhost)', 'windows', 'image', NULL, 4),
  (102, 'sim', 'Simulated OS (provhost)', 'linux', 'image', NULL, 102);

INSERT INTO `image` (`id`, `name`, `prettyname`, `ownerid`, `OSid`, `reloadtime`, `deleted`, `size`) VALUES
  (1, 'noimage', 'No Image', 1, 2, 0, 0, 0);

INSERT INTO `imagerevision` (`id`, `imageid`, `revision`, `userid`, `datecreated`, `deleted`, `production`, `comments`, `imagename`) VALUES
  (1, 1, 0, 1, '1980-01-01 00:00:00', 0, 1, NULL, 'noimage');

INSERT INTO `resourcetype` (`id`, `name`) VALUES (12, 'computer'), (13, 'image'), (15, 'schedule'), (16, 'managementnode');

INSERT INTO `resource` (`id`, `resourcetypeid`, `subid`) VALUES (4, 13, 1);

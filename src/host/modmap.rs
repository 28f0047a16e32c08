//! Which script serves a VCL module row. VCL reaches a computer's provisioning module by
//! `computer.provisioningid → provisioning.moduleid → module` and an image's OS module by
//! `image.OSid → OS.moduleid → module`, and loads `module.perlpackage`. provhost maps that
//! row to a script, in this order (docs/modules.md has the table for VCL's own rows):
//!
//! 1. a loaded module of the kind whose `MODULE.serves` lists the row's `module.name` or
//!    `module.perlpackage` (a site's own names);
//! 2. a perl package under `VCL::Module::OS::` or `VCL::Module::Provisioning::`: the last
//!    part of the package, lower case (`VCL::Module::OS::Linux::Ubuntu` → `os/ubuntu`,
//!    `VCL::Module::Provisioning::VMware::VMware` → `provisioning/vmware`); a last part that
//!    starts with a digit gets the first part in front (`…::Windows::Version_6::7` →
//!    `os/windows7`);
//! 3. otherwise `module.name` without its `os_` / `provisioning_` prefix (`provisioning_qemu`
//!    → `provisioning/qemu`, provhost's own rows, which have no perl package).
//!
//! The package path also says what VCL's Perl module inherits from (`Linux::Ubuntu` is a
//! `Linux`): [`Mapping::vcl_parent`], shown when no script serves the row.

use crate::host::contract::Kind;
use crate::host::registry::ModuleKey;

/// A row of VCL's `module` table, as a reservation reaches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleRow {
    pub id: i64,
    /// `module.name` (`os_linux_ubuntu`, `provisioning_libvirt`, …).
    pub name: String,
    /// `module.perlpackage` (`VCL::Module::OS::Linux::Ubuntu`; empty for provhost's rows).
    pub perl_package: String,
}

impl std::fmt::Display for ModuleRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.id == 0 {
            // A row about to be made (`provhost add provisioning|os`), not yet in the table.
            write!(f, "the new module row {:?}", self.name)?;
        } else {
            write!(f, "module {} {:?}", self.id, self.name)?;
        }
        if !self.perl_package.is_empty() {
            write!(f, " ({})", self.perl_package)?;
        }
        Ok(())
    }
}

/// Which of the rules of the module docs chose the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A module's `MODULE.serves` lists the row.
    Serves,
    /// From `module.perlpackage`.
    PerlPackage,
    /// From `module.name`.
    ModuleName,
}

/// The script a module row maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub key: ModuleKey,
    pub rule: Rule,
    /// What VCL's Perl package inherits from, by the same naming (`linux` for
    /// `VCL::Module::OS::Linux::Ubuntu`), when the package has a parent part.
    pub vcl_parent: Option<String>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The script name for the parts of a package after `VCL::Module::<Kind>::`.
fn package_name(parts: &[&str]) -> Option<String> {
    let last = parts.last()?.to_ascii_lowercase();
    let name = if last.starts_with(|c: char| c.is_ascii_digit()) && parts.len() > 1 {
        format!("{}{last}", parts[0].to_ascii_lowercase())
    } else {
        last
    };
    valid_name(&name).then_some(name)
}

/// Rules 2 and 3 (the default mapping): no loaded module is consulted.
pub fn default_mapping(kind: Kind, row: &ModuleRow) -> Option<Mapping> {
    let kind_part = match kind {
        Kind::Os => "OS",
        Kind::Provisioning => "Provisioning",
        Kind::Site => return None,
    };
    let segments: Vec<&str> = row.perl_package.trim().split("::").collect();
    if segments.len() >= 4
        && segments[0] == "VCL"
        && segments[1] == "Module"
        && segments[2] == kind_part
    {
        // `Version_6` and the like group Windows releases; they are not names.
        let parts: Vec<&str> = segments[3..]
            .iter()
            .copied()
            .filter(|p| !(p.starts_with("Version_") && p[8..].chars().all(|c| c.is_ascii_digit())))
            .collect();
        if let Some(name) = package_name(&parts) {
            let vcl_parent = (parts.len() >= 2)
                .then(|| package_name(&parts[..parts.len() - 1]))
                .flatten()
                .filter(|p| *p != name);
            return Some(Mapping {
                key: (kind, name),
                rule: Rule::PerlPackage,
                vcl_parent,
            });
        }
    }
    let prefix = format!("{}_", kind.as_str());
    let name = row.name.trim();
    let name = name.strip_prefix(&prefix).unwrap_or(name).to_string();
    let ok = valid_name(&name);
    ok.then_some(Mapping {
        key: (kind, name),
        rule: Rule::ModuleName,
        vcl_parent: None,
    })
}

impl crate::host::ScriptHost {
    /// Which script serves module `row` for a `kind` module (rules 1–3 of the module
    /// docs). `None`: the row's name cannot name a script (the error says so).
    pub fn map_module_row(&self, kind: Kind, row: &ModuleRow) -> Option<Mapping> {
        for what in [row.name.trim(), row.perl_package.trim()] {
            if what.is_empty() {
                continue;
            }
            if let Some(m) = self.registry.serving(kind, what) {
                let default = default_mapping(kind, row);
                return Some(Mapping {
                    key: (m.info.kind, m.info.name.clone()),
                    rule: Rule::Serves,
                    vcl_parent: default.and_then(|d| d.vcl_parent),
                });
            }
        }
        default_mapping(kind, row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, name: &str, pkg: &str) -> ModuleRow {
        ModuleRow {
            id,
            name: name.into(),
            perl_package: pkg.into(),
        }
    }

    fn map(kind: Kind, name: &str, pkg: &str) -> (String, Rule, Option<String>) {
        let m = default_mapping(kind, &row(1, name, pkg)).expect("maps");
        assert_eq!(m.key.0, kind);
        (m.key.1, m.rule, m.vcl_parent)
    }

    #[test]
    fn vcl_shipped_rows_map_by_perl_package() {
        use Rule::*;
        let os = |n, p| map(Kind::Os, n, p);
        let prov = |n, p| map(Kind::Provisioning, n, p);
        assert_eq!(
            os("os_linux", "VCL::Module::OS::Linux"),
            ("linux".into(), PerlPackage, None)
        );
        assert_eq!(
            os("os_linux_ubuntu", "VCL::Module::OS::Linux::Ubuntu"),
            ("ubuntu".into(), PerlPackage, Some("linux".into()))
        );
        assert_eq!(
            os("os_unix_lab", "VCL::Module::OS::Linux::UnixLab"),
            ("unixlab".into(), PerlPackage, Some("linux".into()))
        );
        assert_eq!(
            os("os_win7", "VCL::Module::OS::Windows::Version_6::7").0,
            "windows7"
        );
        assert_eq!(
            os("os_win2016", "VCL::Module::OS::Windows::Version_10::2016"),
            ("windows2016".into(), PerlPackage, Some("windows".into()))
        );
        assert_eq!(
            os("os_winxp", "VCL::Module::OS::Windows::Version_5::XP").0,
            "xp"
        );
        assert_eq!(os("os_windows", "VCL::Module::OS::Windows").0, "windows");
        assert_eq!(os("os_esxi", "VCL::Module::OS::Linux::ESXi").0, "esxi");
        assert_eq!(os("os_osx", "VCL::Module::OS::OSX").0, "osx");
        // VCL::Module::OS itself is no OS module: the row's name decides.
        assert_eq!(
            os("os_unix", "VCL::Module::OS"),
            ("unix".into(), ModuleName, None)
        );
        assert_eq!(
            prov("provisioning_libvirt", "VCL::Module::Provisioning::libvirt"),
            ("libvirt".into(), PerlPackage, None)
        );
        assert_eq!(
            prov(
                "provisioning_vmware",
                "VCL::Module::Provisioning::VMware::VMware"
            ),
            ("vmware".into(), PerlPackage, None)
        );
        assert_eq!(
            prov("provisioning_lab", "VCL::Module::Provisioning::Lab").0,
            "lab"
        );
        assert_eq!(
            prov("provisioning_xcat", "VCL::Module::Provisioning::xCAT").0,
            "xcat"
        );
        assert_eq!(
            prov("provisioning_one", "VCL::Module::Provisioning::one").0,
            "one"
        );
        // provhost's own rows have no package.
        assert_eq!(
            prov("provisioning_qemu", ""),
            ("qemu".into(), ModuleName, None)
        );
        assert_eq!(os("os_sim", ""), ("sim".into(), ModuleName, None));
        // An OS package given for a provisioning row is not used for it.
        assert_eq!(prov("provisioning_x", "VCL::Module::OS::Linux").0, "x");
        // VCL's base module as provisioning `none`.
        assert_eq!(prov("base_module", "VCL::Module").0, "base_module");
    }

    #[test]
    fn names_that_cannot_be_scripts_do_not_map() {
        assert_eq!(default_mapping(Kind::Os, &row(9, "os_Bad Name", "")), None);
        assert_eq!(default_mapping(Kind::Os, &row(9, "", "Site::Thing")), None);
        assert_eq!(default_mapping(Kind::Site, &row(9, "site_x", "")), None);
        assert_eq!(
            row(14, "os_linux_ubuntu", "VCL::Module::OS::Linux::Ubuntu").to_string(),
            "module 14 \"os_linux_ubuntu\" (VCL::Module::OS::Linux::Ubuntu)"
        );
    }
}

//! .PKGINFO and .BUILDINFO through the ALPM project's typed models, so
//! every field is checked the way Arch's own tools check it before a
//! package carries it.

use std::str::FromStr;

use alpm_buildinfo::BuildInfoV2;
use alpm_pkginfo::PackageInfoV2;
use alpm_types::{ExtraData, ExtraDataEntry, License, PackageDescription};

use super::super::BuildError;
use super::super::spec::{Family, PackageSpec};

/// Who the site's packages say built them.
pub const PACKAGER: &str = "PenguinDome <penguindome@localhost>";
/// The project page every package and sync-database entry names.
pub const URL: &str = env!("CARGO_PKG_REPOSITORY");
/// The licence of everything a release packages.
pub const LICENSE: &str = "Apache-2.0";

/// Parses one metadata value, naming the field when an ALPM type refuses it.
pub fn field<T: FromStr<Err = alpm_types::Error>>(
    name: &'static str,
    value: &str,
) -> Result<T, BuildError> {
    T::from_str(value).map_err(|source| BuildError::ArchField {
        field: name,
        value: value.to_string(),
        source,
    })
}

/// The .PKGINFO pacman reads to install and list the package.
pub fn pkginfo(spec: &PackageSpec) -> Result<PackageInfoV2, BuildError> {
    let name = field("pkgname", &spec.name)?;
    Ok(PackageInfoV2 {
        pkgbase: field("pkgbase", &spec.name)?,
        pkgname: name,
        pkgver: field("pkgver", &spec.full_version())?,
        pkgdesc: PackageDescription::new(first_line(&spec.summary)),
        url: field("url", URL)?,
        builddate: built_at(spec),
        packager: field("packager", PACKAGER)?,
        size: spec.installed_size(),
        arch: field("arch", spec.arch.name(Family::Arch))?,
        license: vec![field::<License>("license", LICENSE)?],
        replaces: Vec::new(),
        group: Vec::new(),
        conflict: Vec::new(),
        provides: Vec::new(),
        backup: spec
            .files
            .iter()
            .filter(|f| f.config)
            .map(|f| field("backup", f.relative()))
            .collect::<Result<_, _>>()?,
        depend: spec
            .depends_for(Family::Arch)
            .map(|d| field("depend", d))
            .collect::<Result<_, _>>()?,
        optdepend: Vec::new(),
        makedepend: Vec::new(),
        checkdepend: Vec::new(),
        xdata: package_type()?,
    })
}

/// The .BUILDINFO that says how the package was made: by `pdome-admin
/// release`, from the spec alone (no build directory, nothing installed).
/// With no PKGBUILD, the recipe whose digest it records is the .PKGINFO.
pub fn buildinfo(spec: &PackageSpec, pkginfo: &str) -> Result<BuildInfoV2, BuildError> {
    let tool_version = format!("{}-1-any", env!("CARGO_PKG_VERSION"));
    Ok(BuildInfoV2 {
        pkgname: field("pkgname", &spec.name)?,
        pkgbase: field("pkgbase", &spec.name)?,
        pkgver: field("pkgver", &spec.full_version())?,
        pkgarch: field("pkgarch", spec.arch.name(Family::Arch))?,
        pkgbuild_sha256sum: alpm_types::Sha256Checksum::calculate_from(pkginfo),
        packager: field("packager", PACKAGER)?,
        builddate: built_at(spec),
        builddir: field("builddir", "/")?,
        buildenv: Vec::new(),
        options: Vec::new(),
        installed: Vec::new(),
        startdir: field("startdir", "/")?,
        buildtool: field("buildtool", "pdome-admin")?,
        buildtoolver: field("buildtoolver", &tool_version)?,
    })
}

/// `xdata = pkgtype=pkg`: an ordinary package, not a debug or split one.
fn package_type() -> Result<ExtraData, BuildError> {
    let entry = ExtraDataEntry::new("pkgtype".into(), "pkg".into());
    ExtraData::try_from(entry).map_err(|source| BuildError::ArchField {
        field: "xdata",
        value: "pkgtype=pkg".into(),
        source,
    })
}

fn built_at(spec: &PackageSpec) -> i64 {
    i64::try_from(spec.built_at_secs()).unwrap_or(i64::MAX)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::spec::{Arch, PackageFile, Scripts};

    fn spec(depends: &str) -> PackageSpec {
        PackageSpec {
            name: "penguindome-agent".into(),
            version: "1.2.3".into(),
            release: 7,
            arch: Arch::X86_64,
            summary: "The agent\nsecond line".into(),
            description: String::new(),
            depends: vec![
                (Family::Arch, depends.into()),
                (Family::Deb, "libc6".into()),
            ],
            files: vec![PackageFile::config(
                "/etc/penguindome/agent.toml",
                0o600,
                "",
            )],
            scripts: Scripts::default(),
            built_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn pkginfo_carries_the_spec_in_pacmans_terms() {
        let text = pkginfo(&spec("systemd>=250")).unwrap().to_string();
        for line in [
            "pkgname = penguindome-agent\n",
            "pkgver = 1.2.3-7\n",
            "pkgdesc = The agent\n",
            "builddate = 1700000000\n",
            "arch = x86_64\n",
            "license = Apache-2.0\n",
            "backup = etc/penguindome/agent.toml\n",
            "depend = systemd>=250\n",
            "xdata = pkgtype=pkg\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(
            !text.contains("libc6"),
            "another family's dependency: {text}"
        );
        let build = buildinfo(&spec("systemd"), &text).unwrap().to_string();
        assert!(build.contains("buildtool = pdome-admin\n"), "{build}");
    }

    #[test]
    fn a_value_pacman_would_refuse_names_its_field() {
        let err = pkginfo(&spec("not a relation!")).unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::ArchField {
                    field: "depend",
                    ..
                }
            ),
            "{err}"
        );
        let mut bad_name = spec("systemd");
        bad_name.name = "Upper Case".into();
        let err = pkginfo(&bad_name).unwrap_err();
        assert!(
            err.to_string().contains("pkgname = \"Upper Case\""),
            "{err}"
        );
    }
}

//! Releases: build the site's agent packages for apt, dnf and pacman, and
//! publish them as signed repositories the server serves under
//! /penguindome/v1/repo/.

pub mod apt_repo;
pub mod arch;
pub mod archive;
pub mod bootstrap;
pub mod contents;
pub mod deb;
pub mod dnf_repo;
pub mod docs;
pub mod pacman_repo;
pub mod publish;
mod record_check;
pub mod rpm;
pub mod source;
pub mod spec;

use penguindome_protocol::keys::SecretKey;

pub use spec::{BuiltPackage, Family, PackageRecord, PackageSpec};

/// Where the server package installs the agent binary releases package.
pub const DEFAULT_AGENT_BINARY: &str = "/usr/lib/penguindome/agent/penguindome-agent";

/// Errors while building packages or repositories.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Writing an archive failed.
    #[error("writing a package archive: {0}")]
    Io(#[from] std::io::Error),
    /// The Debian packaging library failed.
    #[error("building a .deb: {0}")]
    Deb(#[from] debian_packaging::error::DebianError),
    /// The rpm library failed.
    #[error("building an .rpm: {0}")]
    Rpm(#[from] ::rpm::Error),
    /// Signing failed.
    #[error("signing with the server key: {0}")]
    Sign(String),
    /// A pacman metadata value that the ALPM types refuse.
    #[error("pacman package field {field} = {value:?}")]
    ArchField {
        /// The .PKGINFO, .BUILDINFO or desc field.
        field: &'static str,
        /// The value refused.
        value: String,
        /// Why the ALPM types refused it.
        #[source]
        source: alpm_types::Error,
    },
    /// The .MTREE did not parse as ALPM-MTREEv2.
    #[error("the pacman package's .MTREE: {0}")]
    Mtree(#[from] alpm_mtree::Error),
    /// A package's file list could not form a pacman files-database entry.
    #[error("the pacman files database: {0}")]
    PacmanFiles(#[from] alpm_repo_db::files::Error),
    /// The packaging description in this build is inconsistent.
    #[error("packaging description: {0}")]
    Spec(String),
    /// A package record no index may carry, as only a damaged or altered
    /// manifest holds.
    #[error(
        "the record of package {package:?} in an earlier release's manifest: its {field} {why}; \
         the manifest was damaged or altered: restore the release folder (or the database's \
         releases) from a backup, or publish with --keep 1 to drop older packages"
    )]
    Record {
        /// The record's name, cut short.
        package: String,
        /// The field refused.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Builds one package in one family (signed where the family signs
/// packages themselves: rpm and pacman; apt signs the index).
pub fn build(
    spec: &PackageSpec,
    family: Family,
    key: &SecretKey,
) -> Result<BuiltPackage, BuildError> {
    let spec = spec.for_family(family);
    match family {
        Family::Deb => deb::build(&spec),
        Family::Rpm => rpm::build(&spec, key),
        Family::Arch => arch::build(&spec, key),
    }
}

/// Builds several (spec, family) pairs on every core.
pub fn build_all(
    jobs: &[(&PackageSpec, Family)],
    key: &SecretKey,
) -> Result<Vec<BuiltPackage>, BuildError> {
    // Compression dominates; one thread per package keeps both cores busy
    // without a pool.
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(spec, family)| scope.spawn(move || build(spec, *family, key)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BuildError::Spec("a package build panicked".into())))
            })
            .collect()
    })
}

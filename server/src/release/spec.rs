//! What a package holds, independent of its format.

/// The package families a release is built for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// .deb for apt.
    Deb,
    /// .rpm for dnf.
    Rpm,
    /// .pkg.tar.zst for pacman.
    Arch,
}

impl Family {
    /// All families, in the order releases build them.
    pub const ALL: [Family; 3] = [Family::Deb, Family::Rpm, Family::Arch];

    /// The name used in URLs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Deb => "deb",
            Family::Rpm => "rpm",
            Family::Arch => "arch",
        }
    }

    /// The repository folder under /penguindome/v1/repo/.
    pub fn repo_dir(self) -> &'static str {
        match self {
            Family::Deb => "apt",
            Family::Rpm => "rpm",
            Family::Arch => "arch",
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deb" | "apt" => Ok(Family::Deb),
            "rpm" | "dnf" => Ok(Family::Rpm),
            "arch" | "pacman" => Ok(Family::Arch),
            _ => Err(format!(
                "unknown package format {s:?}: use deb, rpm or arch"
            )),
        }
    }
}

/// Whether a package holds machine code or only data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit x86 (the only architecture the agent is built for so far).
    X86_64,
    /// Architecture-independent.
    Any,
}

impl Arch {
    /// The architecture's name in the given family.
    pub fn name(self, family: Family) -> &'static str {
        match (self, family) {
            (Arch::X86_64, Family::Deb) => "amd64",
            (Arch::X86_64, _) => "x86_64",
            (Arch::Any, Family::Deb) => "all",
            (Arch::Any, Family::Rpm) => "noarch",
            (Arch::Any, Family::Arch) => "any",
        }
    }
}

/// One file a package installs.
#[derive(Debug, Clone)]
pub struct PackageFile {
    /// Absolute path on the installed system.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// The file's contents.
    pub contents: Vec<u8>,
    /// A configuration file the admin may edit and upgrades keep.
    pub config: bool,
    /// Only this family's package installs it (paths that differ by distro).
    pub only_in: Option<Family>,
}

impl PackageFile {
    /// A file that belongs to the package (not configuration).
    pub fn new(path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.to_string(),
            mode,
            contents: contents.into(),
            config: false,
            only_in: None,
        }
    }

    /// The same file, installed only by `family`'s package.
    pub fn only_in(self, family: Family) -> Self {
        Self {
            only_in: Some(family),
            ..self
        }
    }

    /// A configuration file that upgrades keep when the admin changed it.
    pub fn config(path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            config: true,
            ..Self::new(path, mode, contents)
        }
    }

    /// The path without its leading slash, as archives store it.
    pub fn relative(&self) -> &str {
        self.path.trim_start_matches('/')
    }
}

/// Maintainer scripts, in each family's own terms.
#[derive(Debug, Clone, Default)]
pub struct Scripts {
    /// Debian: preinst, postinst, prerm, postrm (dpkg passes the action).
    pub deb: Vec<(&'static str, String)>,
    /// rpm: pre, post, preun, postun (rpm passes the instance count).
    pub rpm: Vec<(String, String)>,
    /// pacman: the .INSTALL file with post_install() and friends.
    pub arch_install: Option<String>,
}

/// Everything needed to build one package in any family.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    /// Package name.
    pub name: String,
    /// Upstream version, e.g. 0.1.0.
    pub version: String,
    /// The site's release number: the package revision that makes each
    /// release newer than the last.
    pub release: u64,
    /// Machine code or data only.
    pub arch: Arch,
    /// One-line summary.
    pub summary: String,
    /// Longer description.
    pub description: String,
    /// Dependencies per family (names, optionally with a version clause
    /// in that family's syntax).
    pub depends: Vec<(Family, String)>,
    /// Installed files.
    pub files: Vec<PackageFile>,
    /// Maintainer scripts.
    pub scripts: Scripts,
    /// Build time, also each archive member's mtime.
    pub built_at: std::time::SystemTime,
}

impl PackageSpec {
    /// The spec as `family` builds it: without the files other families'
    /// packages alone install.
    pub fn for_family(&self, family: Family) -> std::borrow::Cow<'_, PackageSpec> {
        let other = |f: &PackageFile| f.only_in.is_some_and(|only| only != family);
        if !self.files.iter().any(other) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut spec = self.clone();
        spec.files.retain(|f| !other(f));
        std::borrow::Cow::Owned(spec)
    }

    /// Dependencies for one family.
    pub fn depends_for(&self, family: Family) -> impl Iterator<Item = &str> {
        self.depends
            .iter()
            .filter(move |(f, _)| *f == family)
            .map(|(_, d)| d.as_str())
    }

    /// The full version, UPSTREAM-RELEASE, which every family writes alike.
    pub fn full_version(&self) -> String {
        format!("{}-{}", self.version, self.release)
    }

    /// Seconds since the epoch of the build time.
    pub fn built_at_secs(&self) -> u64 {
        self.built_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Total size of the installed files.
    pub fn installed_size(&self) -> u64 {
        self.files.iter().map(|f| f.contents.len() as u64).sum()
    }

    /// Every directory that holds a file, parents first, without "/".
    pub fn directories(&self) -> Vec<String> {
        let mut dirs = std::collections::BTreeSet::new();
        for f in &self.files {
            let mut p = std::path::Path::new(f.relative()).parent();
            while let Some(d) = p {
                if d.as_os_str().is_empty() {
                    break;
                }
                dirs.insert(d.to_string_lossy().into_owned());
                p = d.parent();
            }
        }
        dirs.into_iter().collect()
    }
}

/// A package file as the repository indexes describe it; kept in each
/// release's manifest so that later releases can index it again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PackageRecord {
    /// The family it was built for.
    pub family: Family,
    /// Package name.
    pub name: String,
    /// Full version (with release) as the family writes it.
    pub version: String,
    /// The site release that built it.
    pub release: u64,
    /// Architecture name as the family writes it.
    pub arch: String,
    /// Conventional file name.
    pub file_name: String,
    /// Path of the file inside the family's repository folder.
    pub location: String,
    /// File size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// One-line summary (index files repeat it).
    pub summary: String,
    /// Longer description.
    pub description: String,
    /// Dependencies in the family's syntax.
    pub depends: Vec<String>,
    /// Installed size in bytes.
    pub installed_size: u64,
    /// Installed paths (dnf's filelists and pacman's files database).
    pub paths: Vec<String>,
    /// Build time in seconds since the epoch.
    pub built_at: u64,
    /// The control paragraph (deb) that the Packages index repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Byte range of the rpm header (dnf's primary.xml records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_header_range: Option<(u64, u64)>,
    /// Base64 detached binary signature of the package file (pacman).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// A freshly built package: its record and its bytes.
#[derive(Debug, Clone)]
pub struct BuiltPackage {
    /// What the indexes say about it.
    pub record: PackageRecord,
    /// The package file.
    pub bytes: Vec<u8>,
    /// Detached binary signature (pacman's .sig file).
    pub signature: Option<Vec<u8>>,
}

impl BuiltPackage {
    /// Fills in the record of a package from its spec and bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &PackageSpec,
        family: Family,
        file_name: String,
        location: String,
        bytes: Vec<u8>,
        paths: Vec<String>,
        control: Option<String>,
        rpm_header_range: Option<(u64, u64)>,
        signature: Option<Vec<u8>>,
    ) -> Self {
        use base64::Engine;
        let record = PackageRecord {
            family,
            name: spec.name.clone(),
            version: spec.full_version(),
            release: spec.release,
            arch: spec.arch.name(family).to_string(),
            file_name,
            location,
            size: bytes.len() as u64,
            sha256: super::archive::sha256_hex(&bytes),
            summary: spec.summary.clone(),
            description: spec.description.clone(),
            depends: spec.depends_for(family).map(str::to_string).collect(),
            installed_size: spec.installed_size(),
            paths,
            built_at: spec.built_at_secs(),
            control,
            rpm_header_range,
            signature: signature
                .as_ref()
                .map(|s| base64::engine::general_purpose::STANDARD.encode(s)),
        };
        Self {
            record,
            bytes,
            signature,
        }
    }
}

//! .rpm packages through the rpm crate (v4 format, which rpm 4.18 and
//! dnf 4 read), signed by the server key through sequoia.

use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};

use penguindome_protocol::keys::SecretKey;
use rpm::{BuildConfig, Dependency, FileOptions, PackageBuilder, Scriptlet};

use super::BuildError;
use super::spec::{BuiltPackage, Family, PackageSpec};

/// Bridges the rpm crate's signing hook to our sequoia key, the project's
/// only OpenPGP implementation.
#[derive(Debug)]
pub struct RpmSigner<'a>(pub &'a SecretKey);

impl rpm::signature::Signing for RpmSigner<'_> {
    type Signature = Vec<u8>;

    fn sign(&self, mut data: impl Read, t: rpm::Timestamp) -> Result<Vec<u8>, rpm::Error> {
        let created = UNIX_EPOCH + Duration::from_secs(u64::from(t.0));
        self.0
            .sign_stream_at(&mut data, created)
            .map_err(|e| rpm::Error::SignError(Box::new(e)))
    }
}

/// Builds and signs an .rpm from `spec`.
pub fn build(spec: &PackageSpec, key: &SecretKey) -> Result<BuiltPackage, BuildError> {
    let arch = spec.arch.name(Family::Rpm);
    let built_at = spec.built_at_secs();
    let built_at32 = u32::try_from(built_at).unwrap_or(u32::MAX);
    let mut b = PackageBuilder::new(&spec.name, &spec.version, "Apache-2.0", arch, &spec.summary);
    b.using_config(
        BuildConfig::v4()
            .compression(rpm::CompressionWithLevel::Gzip(6))
            .source_date(built_at32),
    )
    .release(spec.release.to_string())
    .description(spec.description.clone())
    .vendor("PenguinDome")
    .build_host("penguindome");
    for f in &spec.files {
        let mut opts = FileOptions::new(f.path.clone()).permissions(f.mode as u16);
        if f.config {
            opts = opts.config().noreplace();
        }
        b.with_file_contents(f.contents.clone(), opts)?;
    }
    for d in spec.depends_for(Family::Rpm) {
        b.requires(parse_dependency(d));
    }
    for (name, body) in &spec.scripts.rpm {
        let s = Scriptlet::new(body.clone());
        match name.as_str() {
            "pre" => b.pre_install_script(s),
            "post" => b.post_install_script(s),
            "preun" => b.pre_uninstall_script(s),
            "postun" => b.post_uninstall_script(s),
            other => return Err(BuildError::Spec(format!("unknown rpm scriptlet {other}"))),
        };
    }
    let package = b.build_and_sign(RpmSigner(key))?;
    let offsets = package.metadata.get_package_segment_offsets();
    let mut bytes = Vec::new();
    package.write(&mut bytes)?;
    let file_name = format!("{}-{}.{}.rpm", spec.name, spec.full_version(), arch);
    Ok(BuiltPackage::new(
        spec,
        Family::Rpm,
        file_name.clone(),
        format!("Packages/{file_name}"),
        bytes,
        spec.files.iter().map(|f| f.path.clone()).collect(),
        None,
        Some((offsets.header, offsets.payload)),
        None,
    ))
}

/// "name", "name >= 1.0" and the like.
fn parse_dependency(d: &str) -> Dependency {
    let parts: Vec<&str> = d.split_whitespace().collect();
    match parts.as_slice() {
        [name, ">=", v] => Dependency::greater_eq(*name, *v),
        [name, "=", v] => Dependency::eq(*name, *v),
        [name, "<=", v] => Dependency::less_eq(*name, *v),
        [name, ">", v] => Dependency::greater(*name, *v),
        _ => Dependency::any(d),
    }
}

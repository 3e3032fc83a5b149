//! The dnf repository: repodata (primary, filelists, other) described by
//! repomd.xml, which carries a detached armored signature.

use chrono::{DateTime, Utc};
use penguindome_protocol::keys::SecretKey;
use quick_xml::escape::escape;

use super::BuildError;
use super::archive::{gzip, sha256_hex};
use super::spec::PackageRecord;

/// Index files to write, relative to the rpm folder, with their contents.
pub fn index(
    records: &[&PackageRecord],
    key: &SecretKey,
    now: DateTime<Utc>,
    revision: u64,
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    super::record_check::check_all(records)?;
    let mut files = Vec::new();
    let mut entries = String::new();
    for (kind, xml) in [
        ("primary", primary(records)),
        ("filelists", filelists(records)),
        ("other", other(records)),
    ] {
        let gz = gzip(xml.as_bytes())?;
        let gz_hash = sha256_hex(&gz);
        let href = format!("repodata/{gz_hash}-{kind}.xml.gz");
        entries.push_str(&format!(
            "  <data type=\"{kind}\">\n    <checksum type=\"sha256\">{gz_hash}</checksum>\n    \
             <open-checksum type=\"sha256\">{}</open-checksum>\n    <location href=\"{href}\"/>\n    \
             <timestamp>{}</timestamp>\n    <size>{}</size>\n    <open-size>{}</open-size>\n  </data>\n",
            sha256_hex(xml.as_bytes()),
            now.timestamp(),
            gz.len(),
            xml.len(),
        ));
        files.push((href, gz));
    }
    let repomd = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" \
         xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n  <revision>{revision}</revision>\n{entries}</repomd>\n"
    );
    let signature = key
        .sign_armored(repomd.as_bytes())
        .map_err(|e| BuildError::Sign(e.to_string()))?;
    files.push(("repodata/repomd.xml".into(), repomd.into_bytes()));
    files.push(("repodata/repomd.xml.asc".into(), signature));
    Ok(files)
}

/// Splits "0.1.0-3" into ("0.1.0", "3").
fn ver_rel(version: &str) -> (&str, &str) {
    version.rsplit_once('-').unwrap_or((version, "0"))
}

fn version_attrs(r: &PackageRecord) -> String {
    let (ver, rel) = ver_rel(&r.version);
    format!(
        "epoch=\"0\" ver=\"{}\" rel=\"{}\"",
        escape(ver),
        escape(rel)
    )
}

fn requires_entry(dep: &str) -> String {
    let parts: Vec<&str> = dep.split_whitespace().collect();
    let flag = |op: &str| match op {
        ">=" => Some("GE"),
        "<=" => Some("LE"),
        "=" => Some("EQ"),
        ">" => Some("GT"),
        "<" => Some("LT"),
        _ => None,
    };
    match parts.as_slice() {
        [name, op, v] if flag(op).is_some() => {
            let (ver, rel) = match v.rsplit_once('-') {
                Some((ver, rel)) => (ver, Some(rel)),
                None => (*v, None),
            };
            let rel = rel
                .map(|r| format!(" rel=\"{}\"", escape(r)))
                .unwrap_or_default();
            format!(
                "<rpm:entry name=\"{}\" flags=\"{}\" epoch=\"0\" ver=\"{}\"{rel}/>",
                escape(*name),
                flag(op).unwrap_or("EQ"),
                escape(ver)
            )
        }
        _ => format!("<rpm:entry name=\"{}\"/>", escape(dep)),
    }
}

fn primary(records: &[&PackageRecord]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" \
         xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{}\">\n",
        records.len()
    );
    for r in records {
        let (start, end) = r.rpm_header_range.unwrap_or((0, 0));
        let requires: String = r.depends.iter().map(|d| requires_entry(d)).collect();
        let files = file_elements(r);
        out.push_str(&format!(
            "<package type=\"rpm\"><name>{name}</name><arch>{arch}</arch><version {va}/>\
             <checksum type=\"sha256\" pkgid=\"YES\">{sha}</checksum><summary>{summary}</summary>\
             <description>{desc}</description><packager>PenguinDome</packager><url></url>\
             <time file=\"{t}\" build=\"{t}\"/><size package=\"{size}\" installed=\"{isize}\" archive=\"{isize}\"/>\
             <location href=\"{loc}\"/><format><rpm:license>Apache-2.0</rpm:license><rpm:vendor>PenguinDome</rpm:vendor>\
             <rpm:group>Unspecified</rpm:group><rpm:buildhost>penguindome</rpm:buildhost><rpm:sourcerpm></rpm:sourcerpm>\
             <rpm:header-range start=\"{start}\" end=\"{end}\"/>\
             <rpm:provides><rpm:entry name=\"{name}\" flags=\"EQ\" {va}/></rpm:provides>\
             <rpm:requires>{requires}</rpm:requires>{files}</format></package>\n",
            name = escape(r.name.as_str()),
            arch = escape(r.arch.as_str()),
            va = version_attrs(r),
            sha = r.sha256,
            summary = escape(r.summary.as_str()),
            desc = escape(r.description.as_str()),
            t = r.built_at,
            size = r.size,
            isize = r.installed_size,
            loc = escape(r.location.as_str()),
        ));
    }
    out.push_str("</metadata>\n");
    out
}

/// filelists.xml and other.xml: one element per package, keyed by its
/// checksum, with `inner` inside.
fn per_package(
    records: &[&PackageRecord],
    root: &str,
    ns: &str,
    inner: impl Fn(&PackageRecord) -> String,
) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"http://linux.duke.edu/metadata/{ns}\" packages=\"{}\">\n",
        records.len()
    );
    for r in records {
        out.push_str(&format!(
            "<package pkgid=\"{}\" name=\"{}\" arch=\"{}\"><version {}/>{}</package>\n",
            r.sha256,
            escape(r.name.as_str()),
            escape(r.arch.as_str()),
            version_attrs(r),
            inner(r)
        ));
    }
    out.push_str(&format!("</{root}>\n"));
    out
}

fn file_elements(r: &PackageRecord) -> String {
    r.paths
        .iter()
        .map(|p| format!("<file>{}</file>", escape(p.as_str())))
        .collect()
}

fn filelists(records: &[&PackageRecord]) -> String {
    per_package(records, "filelists", "filelists", file_elements)
}

fn other(records: &[&PackageRecord]) -> String {
    per_package(records, "otherdata", "other", |_| String::new())
}

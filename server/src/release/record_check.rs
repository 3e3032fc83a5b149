//! What a package record must look like before an index carries it or a
//! publish copies its file. Records come back from earlier releases'
//! manifests (on disk, or from the database on a cluster), so one that was
//! damaged or tampered with must not inject a stanza into apt's Packages,
//! markup into dnf's XML, or a `../` into the path a publish copies from.

use super::BuildError;
use super::spec::{Family, PackageRecord};

/// Longest name, version, architecture or file name accepted.
const MAX_TOKEN: usize = 200;
/// Fields apt's Packages index adds after each control paragraph.
const INDEX_FIELDS: [&str; 3] = ["Filename:", "Size:", "SHA256:"];

impl PackageRecord {
    /// Refuses a record whose values no index or path may carry.
    pub fn check(&self) -> Result<(), BuildError> {
        self.check_identity()?;
        self.check_text()?;
        match (&self.control, self.family) {
            (Some(control), _) => self.field("control", control_paragraph(control))?,
            (None, Family::Deb) => self.field("control", Err("is missing"))?,
            (None, _) => {}
        }
        Ok(())
    }

    fn check_identity(&self) -> Result<(), BuildError> {
        self.field("name", token(&self.name, "+-._@"))?;
        self.field("version", token(&self.version, "+-._~:"))?;
        self.field("arch", token(&self.arch, "_-"))?;
        self.field("file_name", token(&self.file_name, "+-._~:@"))?;
        self.field("location", location(&self.location, &self.file_name))?;
        self.field("sha256", sha256(&self.sha256))?;
        if let Some(sig) = &self.signature {
            self.field("signature", base64_text(sig))?;
        }
        Ok(())
    }

    fn check_text(&self) -> Result<(), BuildError> {
        self.field("summary", printable(&self.summary, false))?;
        self.field("description", printable(&self.description, true))?;
        for d in &self.depends {
            self.field("depends", printable(d, false).and(no_comma(d)))?;
        }
        for p in &self.paths {
            self.field("paths", printable(p, false))?;
        }
        Ok(())
    }

    fn field(
        &self,
        field: &'static str,
        verdict: Result<(), &'static str>,
    ) -> Result<(), BuildError> {
        verdict.map_err(|why| BuildError::Record {
            package: self.name.chars().take(80).collect(),
            field,
            why,
        })
    }
}

/// Checks every record an index is about to carry.
pub fn check_all(records: &[&PackageRecord]) -> Result<(), BuildError> {
    records.iter().try_for_each(|r| r.check())
}

/// Letters, digits and `extra`, starting with a letter or digit.
fn token(value: &str, extra: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > MAX_TOKEN {
        return Err("is empty or too long");
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("does not start with a letter or digit");
    }
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    {
        Ok(())
    } else {
        Err("holds a character package names and versions never do")
    }
}

/// A relative path of plain components ending in the file's name.
fn location(value: &str, file_name: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = value.split('/').collect();
    if parts.last() != Some(&file_name) {
        return Err("does not end in the record's file name");
    }
    if parts
        .iter()
        .all(|p| token(p, "+-._~:@").is_ok() && *p != "." && *p != "..")
    {
        Ok(())
    } else {
        Err("is not a relative path of plain names")
    }
}

fn sha256(value: &str) -> Result<(), &'static str> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err("is not 64 lowercase hex digits")
    }
}

fn base64_text(value: &str) -> Result<(), &'static str> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        Ok(())
    } else {
        Err("is not base64")
    }
}

/// No control characters (a newline only where `lines` allows it).
fn printable(value: &str, lines: bool) -> Result<(), &'static str> {
    if value
        .chars()
        .all(|c| !c.is_control() || (lines && c == '\n'))
    {
        Ok(())
    } else {
        Err("holds a control character")
    }
}

fn no_comma(value: &str) -> Result<(), &'static str> {
    if value.contains(',') {
        Err("names more than one package")
    } else {
        Ok(())
    }
}

/// One deb822 paragraph: `Field: value` lines and indented continuations,
/// no blank line (which would start another package), none of the fields
/// the index adds itself.
fn control_paragraph(text: &str) -> Result<(), &'static str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if !text.starts_with("Package: ") {
        return Err("does not start with its Package field");
    }
    for line in text.split('\n') {
        printable(line, false).or(Err("holds a control character"))?;
        if line.starts_with([' ', '\t']) {
            if line.trim().is_empty() {
                return Err("holds a blank line");
            }
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return Err("holds a line that is neither a field nor a continuation");
        };
        if token(name, "-").is_err() {
            return Err("holds a field with a malformed name");
        }
        if INDEX_FIELDS.iter().any(|f| {
            line.get(..f.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(f))
        }) {
            return Err("names a field the index writes itself");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PackageRecord {
        PackageRecord {
            family: Family::Deb,
            name: "penguindome-agent".into(),
            version: "0.1.0-1".into(),
            release: 1,
            arch: "amd64".into(),
            file_name: "penguindome-agent_0.1.0-1_amd64.deb".into(),
            location: "pool/main/p/penguindome-agent/penguindome-agent_0.1.0-1_amd64.deb".into(),
            size: 1,
            sha256: "ab".repeat(32),
            summary: "The agent".into(),
            description: "Line one\nline two.".into(),
            depends: vec!["libc6 (>= 2.36)".into()],
            installed_size: 2,
            paths: vec!["/usr/bin/penguindome-agent".into()],
            built_at: 0,
            control: Some(
                "Package: penguindome-agent\nVersion: 0.1.0-1\nDescription: x\n more\n .\n".into(),
            ),
            rpm_header_range: None,
            signature: Some("iQ==".into()),
        }
    }

    fn refused(edit: impl FnOnce(&mut PackageRecord)) -> &'static str {
        let mut r = record();
        edit(&mut r);
        match r.check() {
            Err(BuildError::Record { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_record_a_release_writes_passes() {
        record().check().unwrap();
    }

    #[test]
    fn hostile_values_are_refused_by_field() {
        assert_eq!(
            refused(|r| r.location = "../../../etc/shadow".into()),
            "location"
        );
        assert_eq!(
            refused(|r| r.location = format!("pool/../../{}", r.file_name)),
            "location"
        );
        assert_eq!(
            refused(|r| r.location = format!("/{}", r.file_name)),
            "location"
        );
        assert_eq!(refused(|r| r.sha256 = "\"/><x/>".into()), "sha256");
        assert_eq!(refused(|r| r.name = "a\nb".into()), "name");
        assert_eq!(refused(|r| r.version = "1 2".into()), "version");
        assert_eq!(refused(|r| r.summary = "one\ntwo".into()), "summary");
        assert_eq!(refused(|r| r.depends.push("a, b".into())), "depends");
        assert_eq!(refused(|r| r.paths.push("a\u{1b}[2J".into())), "paths");
        assert_eq!(
            refused(|r| r.signature = Some("iQ==\n%NAME%".into())),
            "signature"
        );
    }

    #[test]
    fn a_control_paragraph_cannot_carry_another_package_or_the_index_fields() {
        let with = |c: &str| refused(|r| r.control = Some(c.into()));
        assert_eq!(with("Package: a\n\nPackage: evil\n"), "control");
        assert_eq!(with("Package: a\n \nPackage: evil\n"), "control");
        assert_eq!(with("Package: a\nfilename: pool/evil.deb\n"), "control");
        assert_eq!(with("Package: a\nnot a field\n"), "control");
        assert_eq!(with("Version: 1\n"), "control");
        assert_eq!(with("Package: a\nDescription: x\r\n"), "control");
        // A character of several bytes where an index field's name would
        // end is looked at, not cut through (found by the fuzzer).
        let mut r = record();
        r.control = Some("Package: a\nVersion:\u{e9}1.0-1\n".into());
        r.check().unwrap();
    }
}

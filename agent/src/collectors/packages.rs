//! Which of some packages are installed, and at which version, from the
//! machine's package database (dpkg, pacman or rpm).

use std::collections::BTreeMap;

use crate::host::Host;

/// Installed versions of those of `names` that are installed, and the
/// database they were read from.
pub fn installed_versions(
    host: &Host,
    names: &[String],
) -> Result<(BTreeMap<String, String>, String), String> {
    if host.exists("/var/lib/dpkg/status") {
        let status = host
            .read_to_string("/var/lib/dpkg/status")
            .map_err(|e| format!("cannot read /var/lib/dpkg/status: {e}"))?;
        let mut out = BTreeMap::new();
        for para in status.split("\n\n") {
            let field = |k: &str| {
                para.lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                    .map(str::trim)
            };
            if let (Some(name), Some(status), Some(version)) =
                (field("Package"), field("Status"), field("Version"))
                && status.ends_with(" installed")
                && names.iter().any(|n| n == name)
            {
                out.insert(name.to_string(), version.to_string());
            }
        }
        return Ok((out, "/var/lib/dpkg/status".into()));
    }
    if host.exists("/var/lib/pacman/local") {
        let mut out = BTreeMap::new();
        for dir in host.list_dir("/var/lib/pacman/local") {
            // NAME-VERSION-RELEASE, where NAME may itself contain dashes.
            let mut parts = dir.rsplitn(3, '-');
            let (Some(rel), Some(ver), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if names.iter().any(|n| n == name) {
                out.insert(name.to_string(), format!("{ver}-{rel}"));
            }
        }
        return Ok((out, "/var/lib/pacman/local".into()));
    }
    if host.find_program("rpm").is_some() {
        // `--`: a name from agent.toml is never taken for an option.
        let mut args = vec!["-q", "--qf", "%{NAME} %{EVR}\\n", "--"];
        args.extend(names.iter().map(String::as_str));
        let out = host
            .run("rpm", &args)
            .map_err(|e| format!("cannot run rpm -q: {e}"))?;
        // rpm -q exits 1 when any is missing and says so on stdout.
        let found = out
            .stdout
            .lines()
            .filter(|l| !l.contains(" is not installed"))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        return Ok((found, "rpm -q".into()));
    }
    Err("no dpkg, pacman or rpm database found".into())
}

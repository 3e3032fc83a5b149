//! Entry points of the collectors' fuzz targets (tests/fuzz, run with
//! scripts/fuzz) and of the test that replays their corpora on every
//! build: each feeds untrusted bytes to the parsers of one kind of input a
//! collector reads from the machine, which must answer without panicking,
//! looping or allocating without bound.
//!
//! Inputs that are several files are split at NUL bytes (which none of
//! those files may contain), in the order each function names.

use std::collections::{BTreeSet, HashMap};

use crate::collectors::hd_encryption::parse as mounts_parse;
use crate::collectors::os_updates::{apt, dnf};
use crate::collectors::screenlock::{dconf, desktops, gvdb};
use crate::host::Host;

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The parts of a multi-file input.
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    out.resize(n, b"");
    out
}

/// A fixture machine holding `files`; the directory goes with the host.
fn machine(files: &[(&str, &[u8])]) -> Option<(tempfile::TempDir, Host)> {
    let dir = tempfile::tempdir().ok()?;
    for (path, data) in files {
        let p = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent()?).ok()?;
        std::fs::write(&p, data).ok()?;
    }
    let host = Host::fixture(dir.path(), Vec::new());
    Some((dir, host))
}

/// `nft -j list ruleset` output and an `iptables-save` dump.
pub fn firewall(data: &[u8]) {
    crate::collectors::firewall::parse_untrusted(&text(data));
}

/// A dconf database (GVDB) with the keys the screen-lock collector wants.
pub fn gvdb(data: &[u8]) {
    let _ = gvdb::parse(
        data,
        &[
            "/org/gnome/desktop/screensaver/lock-enabled",
            "/org/gnome/desktop/session/idle-delay",
            "/org/gnome/desktop/screensaver/lock-delay",
        ],
    );
}

/// A dconf keyfile (`/etc/dconf/db/local.d/`), GVariant text values, and
/// an xfconf channel.
pub fn desktop_settings(data: &[u8]) {
    let t = text(data);
    for line in t.lines() {
        let _ = dconf::parse_text_value(line.split_once('=').map_or(line, |(_, v)| v));
    }
    let _ = desktops::xfconf(&t);
    if let Some((_dir, host)) = machine(&[("/etc/dconf/db/local.d/00-fuzz", data)]) {
        let _ = dconf::keyfile_dir(&host, "/etc/dconf/db/local.d");
    }
}

/// kscreenlockerrc, the admin's then the user's: two parts.
pub fn kde(data: &[u8]) {
    let p = parts(data, 2);
    let files = [
        ("/etc/xdg/kscreenlockerrc", p[0]),
        ("/home/u/.config/kscreenlockerrc", p[1]),
    ];
    if let Some((_dir, host)) = machine(&files) {
        let _ = desktops::kde(&host, "/home/u", 1000);
    }
}

/// /proc/self/mounts and /proc/swaps.
pub fn mounts(data: &[u8]) {
    let t = text(data);
    let _ = mounts_parse::parse_mounts(&t);
    let _ = mounts_parse::parse_swaps(&t);
}

/// /etc/os-release.
pub fn os_release(data: &[u8]) {
    let _ = crate::collectors::os_info::parse_os_release(&text(data));
}

/// `sshd -T` output.
pub fn sshd(data: &[u8]) {
    let _ = crate::collectors::sshd::parse_dump(&text(data));
}

/// /etc/passwd, /etc/shadow and /etc/login.defs: three parts.
pub fn accounts(data: &[u8]) {
    let p = parts(data, 3);
    let _ = crate::collectors::users::parse_passwd(&text(p[0]));
    let files = [
        ("/etc/passwd", p[0]),
        ("/etc/shadow", p[1]),
        ("/etc/login.defs", p[2]),
    ];
    if let Some((_dir, host)) = machine(&files) {
        let _ = crate::collectors::users::uid_range(&host);
        let _ = crate::collectors::users::shadow(&host);
    }
}

/// dpkg's status file, then the same bytes as an apt Packages list looked
/// up for the packages the status says are installed.
pub fn dpkg(data: &[u8]) {
    let Ok((installed, _, _)) = apt::parse_status(&text(data)) else {
        return;
    };
    let _ = apt::scan_packages(data, "Packages", &installed, |_, _, _| {});
}

/// `rpm -qa` output, then the same bytes as dnf's primary.xml and
/// updateinfo.xml for a few installed names.
pub fn rpm(data: &[u8]) {
    let _ = dnf::parse_rpm_qa(&text(data));
    let wanted: BTreeSet<&str> = ["bash", "kernel", "openssl", "glibc"].into();
    let path = std::path::Path::new("primary.xml");
    let mut offers = HashMap::new();
    let _ = dnf::read_primary_from(data, path, "fuzz", &wanted, &mut offers);
    let mut fixes = HashMap::new();
    let _ = dnf::read_updateinfo_from(data, path, &wanted, &mut fixes);
}

/// pacman.conf (with an Include of a second part).
pub fn pacman_conf(data: &[u8]) {
    let p = parts(data, 2);
    let files = [
        ("/etc/pacman.conf", p[0]),
        ("/etc/pacman.d/mirrorlist", p[1]),
    ];
    if let Some((_dir, host)) = machine(&files) {
        let _ =
            crate::collectors::os_updates::pacman::parse_conf(&host, "/etc/pacman.conf", "x86_64");
    }
}

/// An entry point: hostile bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every entry point by the name of its fuzz target.
pub const TARGETS: &[(&str, Target)] = &[
    ("agent_firewall", firewall),
    ("agent_gvdb", gvdb),
    ("agent_desktop_settings", desktop_settings),
    ("agent_kde", kde),
    ("agent_mounts", mounts),
    ("agent_os_release", os_release),
    ("agent_sshd", sshd),
    ("agent_accounts", accounts),
    ("agent_dpkg", dpkg),
    ("agent_rpm", rpm),
    ("agent_pacman_conf", pacman_conf),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed corpus input and every crash found, through its
    /// target: what the fuzzers found once stays fixed.
    #[test]
    fn corpora_and_regressions_replay_without_panicking() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz");
        let mut ran = 0;
        for (name, target) in super::TARGETS {
            let mut seen = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    target(&std::fs::read(entry.path()).unwrap());
                    seen += 1;
                }
            }
            assert!(seen > 0, "{name} has no corpus in tests/fuzz/corpus/{name}");
            ran += seen;
        }
        assert!(ran >= super::TARGETS.len());
    }
}

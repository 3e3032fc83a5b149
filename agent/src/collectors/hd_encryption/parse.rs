//! Parsers for the kernel's mount and swap tables.

/// One line of /proc/self/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What was mounted (a device path, `server:/export`, a pool/dataset...).
    pub source: String,
    /// Where, unescaped.
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount options, comma-separated (overlay's upperdir lives here).
    pub options: String,
}

/// One line of /proc/swaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    /// Device or file path, unescaped, without the " (deleted)" mark.
    pub filename: String,
    /// `partition` or `file`.
    pub kind: String,
}

/// Undoes the kernel's octal escapes in mount tables (`\040` is a space,
/// `\011` a tab, `\012` a newline, `\134` a backslash).
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A line shortened for a note, so one huge garbage line cannot bloat a report.
fn shorten(line: &str) -> String {
    let mut s: String = line.chars().take(80).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// Parses /proc/self/mounts: the mounts, and notes on lines that make no sense.
pub fn parse_mounts(text: &str) -> (Vec<Mount>, Vec<String>) {
    let mut mounts = Vec::new();
    let mut notes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !f[1].starts_with('/') {
            notes.push(format!(
                "/proc/self/mounts line {} ignored (expected: source mountpoint fstype options): {}",
                n + 1,
                shorten(line)
            ));
            continue;
        }
        mounts.push(Mount {
            source: unescape(f[0]),
            mountpoint: unescape(f[1]),
            fstype: unescape(f[2]),
            options: f.get(3).map(|o| unescape(o)).unwrap_or_default(),
        });
    }
    (mounts, notes)
}

/// Parses /proc/swaps (a header line, then filename, type, size, used, priority).
pub fn parse_swaps(text: &str) -> (Vec<Swap>, Vec<String>) {
    let mut swaps = Vec::new();
    let mut notes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || (n == 0 && line.starts_with("Filename")) {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 || !f[0].starts_with('/') {
            notes.push(format!(
                "/proc/swaps line {} ignored (expected: filename type size used priority): {}",
                n + 1,
                shorten(line)
            ));
            continue;
        }
        let name = unescape(f[0]);
        // A swap file deleted while active is still in use; its name is the old path.
        let name = name.strip_suffix(" (deleted)").unwrap_or(&name).to_string();
        swaps.push(Swap {
            filename: name,
            kind: f[1].to_string(),
        });
    }
    (swaps, notes)
}

/// The `major:minor` of the mount at `mountpoint` with `source`, from
/// /proc/self/mountinfo (for sources such as /dev/root that name no node).
pub fn mountinfo_device(text: &str, mountpoint: &str, source: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        if l.len() < 5 || r.len() < 2 || unescape(l[4]) != mountpoint || unescape(r[1]) != source {
            return None;
        }
        let (major, minor) = l[2].split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

/// The value of `key=` in a comma-separated option list (overlay's upperdir).
pub fn option<'a>(options: &'a str, key: &str) -> Option<&'a str> {
    options
        .split(',')
        .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
}

/// Normalises an absolute path: resolves `.` and `..`, drops doubled slashes.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// True when `path` is `dir` or below it (whole components only).
pub fn is_under(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(
            unescape("/media/alice/My\\040Stick"),
            "/media/alice/My Stick"
        );
        assert_eq!(unescape("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape("bad\\999\\"), "bad\\999\\");
    }

    #[test]
    fn mounts_and_garbage() {
        let (m, notes) = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\n\njunk\nnone relative tmpfs rw 0 0\n/dev/sdb1 /mnt/a\\040b vfat\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mountpoint, "/mnt/a b");
        assert_eq!(m[1].options, "");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("line 3"), "{notes:?}");
    }

    #[test]
    fn swaps_with_deleted_file() {
        let (s, notes) = parse_swaps(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/dm-1  partition\t1003516\t0\t-2\n/swap\\040file\\040(deleted) file 10 0 -3\nbroken\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].filename, "/swap file");
        assert_eq!(s[1].kind, "file");
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn mountinfo_lookup() {
        let t = "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n30 22 0:40 / /run rw - tmpfs tmpfs rw\n";
        assert_eq!(mountinfo_device(t, "/", "/dev/root"), Some((8, 2)));
        assert_eq!(mountinfo_device(t, "/", "/dev/sda2"), None);
        assert_eq!(mountinfo_device("garbage line\n", "/", "x"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(normalize("/dev/disk/by-uuid/../../dm-0"), "/dev/dm-0");
        assert_eq!(normalize("/../x//y/."), "/x/y");
        assert!(is_under("/home/a", "/home"));
        assert!(!is_under("/homer", "/home"));
        assert!(is_under("/x", "/"));
        assert_eq!(
            option("rw,lowerdir=/a:/b,upperdir=/u,workdir=/w", "upperdir"),
            Some("/u")
        );
    }
}

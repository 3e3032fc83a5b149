//! GSettings as dconf stores them, read from files: the user's database,
//! the system databases of the `user` profile with their locks, and the
//! schema defaults (with distribution overrides) when nothing is set.

use std::collections::BTreeSet;

use super::gvdb::{self, GValue, Table};
use crate::host::Host;

/// One database of a dconf profile.
struct Source {
    /// What an admin would look at (a file or directory).
    origin: String,
    table: Table,
}

/// The dconf view of one user.
pub struct Dconf {
    /// Highest priority first: the user database, then system databases.
    sources: Vec<Source>,
    /// Notes on what was read or could not be read.
    pub notes: Vec<String>,
}

/// Where a value came from.
pub struct Setting {
    /// The value.
    pub value: GValue,
    /// `KEY = VALUE (source)`, for evidence.
    pub evidence: String,
}

/// A GSettings schema this collector reads: id and dconf path.
pub struct Schema {
    /// Schema id, e.g. `org.gnome.desktop.session`.
    pub id: &'static str,
    /// Its dconf directory, e.g. `/org/gnome/desktop/session/`.
    pub path: &'static str,
}

/// The profile's database lines (`user-db:user`, `system-db:local`, ...).
fn profile(host: &Host, uid: u32) -> (String, Vec<String>) {
    // The same search order as dconf: a per-user runtime profile (GDM uses
    // it), then the admin's, then the distribution's.
    let candidates = [
        format!("/run/dconf/user/{uid}"),
        "/etc/dconf/profile/user".to_string(),
        "/usr/local/share/dconf/profile/user".to_string(),
        "/usr/share/dconf/profile/user".to_string(),
    ];
    for path in candidates {
        if let Ok(text) = host.read_to_string(&path) {
            let lines = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            return (path, lines);
        }
    }
    (
        "no dconf profile file (dconf's default: user-db:user)".into(),
        vec!["user-db:user".into()],
    )
}

/// Reads a GVDB file of the machine, bounded in size; `user` files only
/// as far as that user could read them.
fn read_gvdb(
    host: &Host,
    path: &str,
    user: Option<(u32, &str)>,
    wanted: &[&str],
) -> Result<Table, String> {
    let data = match user {
        Some((uid, home)) => {
            super::read_user_file(host, path, uid, home).map_err(|e| format!("{path}: {e}"))?
        }
        None => {
            let p = host.path(path);
            let meta = std::fs::metadata(&p).map_err(|e| format!("{path}: {e}"))?;
            if !meta.is_file() || meta.len() > gvdb::MAX_FILE {
                return Err(format!("{path}: not a regular file of a plausible size"));
            }
            std::fs::read(&p).map_err(|e| format!("{path}: {e}"))?
        }
    };
    gvdb::parse(&data, wanted).map_err(|e| format!("{path}: not a dconf database ({})", e.0))
}

impl Dconf {
    /// Loads the user's profile: `home` is their home directory; only the
    /// keys of `schemas` that have a default in [`DEFAULTS`] (every key the
    /// desktops read) are read from the databases.
    pub fn load(host: &Host, uid: u32, home: &str, schemas: &[&Schema]) -> Self {
        let keys = wanted(schemas);
        let wanted: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (profile_path, lines) = profile(host, uid);
        let mut notes = vec![format!("dconf profile: {profile_path}")];
        let mut sources = Vec::new();
        for line in lines {
            let Some((kind, name)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            match kind.trim() {
                "user-db" if !name.contains('/') => {
                    let path = format!("{}/.config/dconf/{name}", home.trim_end_matches('/'));
                    if !host.exists(&path) {
                        notes.push(format!("{path} absent (nothing changed from the defaults)"));
                        continue;
                    }
                    match read_gvdb(host, &path, Some((uid, home)), &wanted) {
                        Ok(table) => sources.push(Source {
                            origin: path,
                            table,
                        }),
                        Err(e) => notes.push(e),
                    }
                }
                "system-db" if !name.contains('/') => {
                    if let Some(s) = system_db(host, name, &wanted, &mut notes) {
                        sources.push(s);
                    }
                }
                "file-db" => match read_gvdb(host, name, None, &wanted) {
                    Ok(table) => sources.push(Source {
                        origin: name.to_string(),
                        table,
                    }),
                    Err(e) => notes.push(e),
                },
                // service-db and unknown kinds hold nothing readable here.
                _ => notes.push(format!("dconf profile line {line:?} not read")),
            }
        }
        Self { sources, notes }
    }

    /// The effective value of `schema`/`key`: dconf's lookup (a lock in a
    /// lower database hides everything above it), else the schema default.
    pub fn get(&self, host: &Host, schema: &Schema, key: &str) -> Option<Setting> {
        let full = format!("{}{key}", schema.path);
        // The lowest-priority database that locks the key decides where the
        // search starts, as in dconf's engine.
        let lock_level = self
            .sources
            .iter()
            .rposition(|s| s.table.locks.iter().any(|l| l == &full))
            .unwrap_or(0);
        for (i, s) in self.sources.iter().enumerate().skip(lock_level) {
            if let Some(v) = s.table.values.get(&full) {
                let locked = if lock_level > 0 && i == lock_level {
                    ", locked"
                } else {
                    ""
                };
                return Some(Setting {
                    value: v.clone(),
                    evidence: format!("{full} = {v} ({}{locked})", s.origin),
                });
            }
        }
        schema_default(host, schema, key)
    }
}

/// A system database: the compiled file dconf reads, else its keyfiles.
fn system_db(host: &Host, name: &str, wanted: &[&str], notes: &mut Vec<String>) -> Option<Source> {
    let path = format!("/etc/dconf/db/{name}");
    let dir = format!("{path}.d");
    if host.exists(&path) {
        return match read_gvdb(host, &path, None, wanted) {
            Ok(table) => {
                if newer_than(host, &dir, &path) {
                    notes.push(format!(
                        "{dir} has files newer than {path}: run `dconf update` to apply them"
                    ));
                }
                Some(Source {
                    origin: path,
                    table,
                })
            }
            Err(e) => {
                notes.push(e);
                None
            }
        };
    }
    if !host.exists(&dir) {
        notes.push(format!("{path} absent"));
        return None;
    }
    // Not compiled: dconf itself ignores these until `dconf update` runs,
    // but they say what the admin meant; the evidence names them.
    notes.push(format!(
        "{path} is not compiled; read the keyfiles in {dir} (dconf applies them after `dconf update`)"
    ));
    Some(Source {
        origin: dir.clone(),
        table: keyfile_dir(host, &dir),
    })
}

/// True when a file in `dir` (or its locks/) is newer than `file`.
fn newer_than(host: &Host, dir: &str, file: &str) -> bool {
    let mtime = |p: &str| {
        std::fs::metadata(host.path(p))
            .and_then(|m| m.modified())
            .ok()
    };
    let Some(compiled) = mtime(file) else {
        return false;
    };
    [dir.to_string(), format!("{dir}/locks")].iter().any(|d| {
        host.list_dir(d)
            .iter()
            .filter_map(|n| mtime(&format!("{d}/{n}")))
            .any(|t| t > compiled)
    })
}

/// Values and locks from a `NAME.d` directory of keyfiles; later files win.
pub(crate) fn keyfile_dir(host: &Host, dir: &str) -> Table {
    let mut table = Table::default();
    for name in host.list_dir(dir) {
        let path = format!("{dir}/{name}");
        if host.path(&path).is_dir() || name.starts_with('.') {
            continue;
        }
        let Ok(text) = host.read_to_string(&path) else {
            continue;
        };
        let mut group = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(g) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                group = g.trim().trim_matches('/').to_string();
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if group.is_empty() {
                continue;
            }
            if let Some(value) = parse_text_value(v.trim()) {
                table.values.insert(format!("/{group}/{}", k.trim()), value);
            }
        }
    }
    let locks_dir = format!("{dir}/locks");
    let mut locks = BTreeSet::new();
    for name in host.list_dir(&locks_dir) {
        let text = host
            .read_to_string(&format!("{locks_dir}/{name}"))
            .unwrap_or_default();
        locks.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| l.starts_with('/'))
                .map(String::from),
        );
    }
    table.locks = locks.into_iter().collect();
    table
}

/// Parses GVariant text of a basic type: `true`, `uint32 600`, `'text'`.
pub fn parse_text_value(text: &str) -> Option<GValue> {
    let text = text.trim();
    match text {
        "true" => return Some(GValue::Bool(true)),
        "false" => return Some(GValue::Bool(false)),
        _ => {}
    }
    if let Some(q) = text.chars().next().filter(|c| *c == '\'' || *c == '"')
        && text.len() >= 2
        && text.ends_with(q)
    {
        return Some(GValue::Str(
            text[1..text.len() - 1].replace(&format!("\\{q}"), &q.to_string()),
        ));
    }
    let number = [
        "byte", "int16", "uint16", "int32", "uint32", "int64", "uint64", "handle",
    ]
    .iter()
    .find_map(|t| text.strip_prefix(t).and_then(|r| r.strip_prefix(' ')))
    .unwrap_or(text)
    .trim();
    if let Ok(n) = number.parse::<i64>() {
        return Some(GValue::Int(n));
    }
    if let Some(hex) = number.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Some(GValue::Int(n));
    }
    let float = text.strip_prefix("double ").unwrap_or(text).trim();
    if let Ok(d) = float.parse::<f64>() {
        return Some(GValue::Double(d));
    }
    Some(GValue::Other(text.to_string()))
}

/// Built-in defaults of the keys this collector reads (from the schemas).
const DEFAULTS: &[(&str, &str, &str)] = &[
    ("org.gnome.desktop.screensaver", "lock-enabled", "true"),
    ("org.gnome.desktop.screensaver", "lock-delay", "uint32 0"),
    ("org.gnome.desktop.session", "idle-delay", "uint32 300"),
    ("org.gnome.desktop.lockdown", "disable-lock-screen", "false"),
    ("org.cinnamon.desktop.screensaver", "lock-enabled", "true"),
    ("org.cinnamon.desktop.screensaver", "lock-delay", "uint32 0"),
    (
        "org.cinnamon.desktop.screensaver",
        "idle-activation-enabled",
        "true",
    ),
    ("org.cinnamon.desktop.session", "idle-delay", "uint32 900"),
    (
        "org.cinnamon.desktop.lockdown",
        "disable-lock-screen",
        "false",
    ),
    ("org.mate.screensaver", "lock-enabled", "true"),
    ("org.mate.screensaver", "idle-activation-enabled", "true"),
    ("org.mate.screensaver", "lock-delay", "0"),
    ("org.mate.session", "idle-delay", "5"),
    ("org.mate.lockdown", "disable-lock-screen", "false"),
    ("apps.light-locker", "lock-after-screensaver", "uint32 5"),
];

/// The full dconf keys of `schemas` that this collector reads.
fn wanted(schemas: &[&Schema]) -> Vec<String> {
    DEFAULTS
        .iter()
        .filter_map(|(id, key, _)| {
            let s = schemas.iter().find(|s| s.id == *id)?;
            Some(format!("{}{key}", s.path))
        })
        .collect()
}

/// The default of `schema`/`key`: a distribution's `.gschema.override`
/// (later files win, as glib-compile-schemas applies them), else the
/// schema's own.
fn schema_default(host: &Host, schema: &Schema, key: &str) -> Option<Setting> {
    const DIR: &str = "/usr/share/glib-2.0/schemas";
    let mut found = None;
    for name in host.list_dir(DIR) {
        if !name.ends_with(".gschema.override") {
            continue;
        }
        let Ok(text) = host.read_to_string(&format!("{DIR}/{name}")) else {
            continue;
        };
        let mut in_schema = false;
        for line in text.lines().map(str::trim) {
            if let Some(g) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                // `[id]` or `[id:desktop]` (desktop-specific overrides apply
                // only under that desktop; they are rare, and read too).
                in_schema = g.split(':').next() == Some(schema.id);
                continue;
            }
            if !in_schema {
                continue;
            }
            if let Some((k, v)) = line.split_once('=')
                && k.trim() == key
                && let Some(value) = parse_text_value(v)
            {
                found = Some(Setting {
                    evidence: format!("{}{key} = {value} (default from {DIR}/{name})", schema.path),
                    value,
                });
            }
        }
    }
    found.or_else(|| {
        let (_, _, text) = DEFAULTS
            .iter()
            .find(|(s, k, _)| *s == schema.id && *k == key)?;
        let value = parse_text_value(text)?;
        Some(Setting {
            evidence: format!("{}{key} = {value} (schema default)", schema.path),
            value,
        })
    })
}

impl Setting {
    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            GValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            GValue::Int(n) => Some(n),
            _ => None,
        }
    }
}

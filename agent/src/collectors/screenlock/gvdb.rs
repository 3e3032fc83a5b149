//! A bounded reader for GVariant database (GVDB) files, the format of
//! dconf databases (`~/.config/dconf/user`, `/etc/dconf/db/NAME`).
//!
//! The `gvdb` crate reads this format too, but its key lookup recurses
//! through parent items without a bound, so a crafted user database (the
//! user owns it; the agent runs as root) could overflow the agent's stack.
//! This reader walks the item array once, follows each parent chain for at
//! most [`MAX_DEPTH`] steps and decodes only the basic value types that
//! desktop settings use; anything odd is skipped, never trusted.

use std::collections::BTreeMap;

/// Longest parent chain followed (dconf paths are a few levels deep).
const MAX_DEPTH: usize = 64;
/// Largest file read (dconf user databases are a few KiB to a few hundred).
pub const MAX_FILE: u64 = 16 << 20;
/// Bytes of one hash item.
const ITEM: usize = 24;

/// One decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum GValue {
    /// `b`
    Bool(bool),
    /// Any integer type (`y n q i u x t h`); `t` above i64::MAX saturates.
    Int(i64),
    /// `d`
    Double(f64),
    /// `s`, `o`, `g`
    Str(String),
    /// Any other type, by its type string (not decoded).
    Other(String),
}

impl std::fmt::Display for GValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GValue::Bool(b) => write!(f, "{b}"),
            GValue::Int(n) => write!(f, "{n}"),
            GValue::Double(d) => write!(f, "{d}"),
            GValue::Str(s) => write!(f, "'{s}'"),
            GValue::Other(t) => write!(f, "<{t}>"),
        }
    }
}

/// The values of a database and, for system databases, its locked keys.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// Full key path to value.
    pub values: BTreeMap<String, GValue>,
    /// Keys listed in the `.locks` table.
    pub locks: Vec<String>,
}

/// Why a file is not a usable GVDB file.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The file's structure is little-endian always; `big` says whether its
/// values are big-endian (a "byteswapped" file).
struct Reader<'a> {
    data: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn u32_at(&self, off: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    }

    fn u16_at(&self, off: usize) -> Option<u16> {
        let b: [u8; 2] = self.data.get(off..off.checked_add(2)?)?.try_into().ok()?;
        Some(u16::from_le_bytes(b))
    }

    /// The bytes a (start, end) pointer at `off` points to.
    fn pointer(&self, off: usize, align: usize) -> Option<&[u8]> {
        let start = self.u32_at(off)? as usize;
        let end = self.u32_at(off + 4)? as usize;
        if start > end || !start.is_multiple_of(align) {
            return None;
        }
        self.data.get(start..end)
    }

    /// Parses the hash table at the pointer `ptr_off`; `depth` bounds nesting.
    fn table(&self, ptr_off: usize, depth: usize) -> Result<Table, Malformed> {
        let start = self.u32_at(ptr_off).ok_or(Malformed("truncated pointer"))? as usize;
        let bytes = self
            .pointer(ptr_off, 4)
            .ok_or(Malformed("hash table pointer out of range"))?;
        if bytes.len() < 8 {
            return Err(Malformed("hash table too short"));
        }
        let bloom = self.u32_at(start).unwrap_or(0) & ((1 << 27) - 1);
        let n_buckets = self.u32_at(start + 4).unwrap_or(0);
        let items_off = 8usize
            .checked_add((bloom as usize).saturating_mul(4))
            .and_then(|o| o.checked_add((n_buckets as usize).saturating_mul(4)))
            .filter(|&o| o <= bytes.len())
            .ok_or(Malformed("hash table header does not fit"))?;
        let n_items = (bytes.len() - items_off) / ITEM;
        let item_at = |i: usize| start + items_off + i * ITEM;
        let mut out = Table::default();
        for i in 0..n_items {
            let base = item_at(i);
            let Some(key) = self.full_key(i, n_items, &item_at) else {
                continue;
            };
            match self.data.get(base + 14) {
                Some(b'v') => {
                    if let Some(v) = self
                        .pointer(base + 16, 8)
                        .and_then(|b| decode_variant(b, self.big))
                    {
                        out.values.entry(key).or_insert(v);
                    }
                }
                Some(b'H') if depth > 0 && key == ".locks" => {
                    if let Ok(sub) = self.table(base + 16, depth - 1) {
                        out.locks.extend(sub.values.into_keys());
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The key of item `i` with its parents' keys before it.
    fn full_key(
        &self,
        i: usize,
        n_items: usize,
        item_at: &dyn Fn(usize) -> usize,
    ) -> Option<String> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = i;
        for _ in 0..MAX_DEPTH {
            let base = item_at(cur);
            let kstart = self.u32_at(base + 8)? as usize;
            let ksize = self.u16_at(base + 12)? as usize;
            parts.push(self.data.get(kstart..kstart.checked_add(ksize)?)?);
            let parent = self.u32_at(base + 4)?;
            if parent == u32::MAX {
                let mut key = Vec::new();
                for p in parts.iter().rev() {
                    key.extend_from_slice(p);
                }
                return String::from_utf8(key).ok();
            }
            cur = parent as usize;
            if cur >= n_items {
                return None;
            }
        }
        None
    }
}

/// Decodes a serialised `v` (the value, a zero byte, its type string).
fn decode_variant(b: &[u8], big: bool) -> Option<GValue> {
    let zero = b.iter().rposition(|&c| c == 0)?;
    let ty = std::str::from_utf8(&b[zero + 1..]).ok()?;
    let data = &b[..zero];
    let int = |n: usize| -> Option<i128> {
        if data.len() != n {
            return None;
        }
        let mut buf = [0u8; 8];
        if big {
            buf[8 - n..].copy_from_slice(data);
            Some(u64::from_be_bytes(buf) as i128)
        } else {
            buf[..n].copy_from_slice(data);
            Some(u64::from_le_bytes(buf) as i128)
        }
    };
    let signed = |v: i128, bits: u32| -> i64 {
        let shift = 128 - bits;
        ((v << shift) >> shift) as i64
    };
    Some(match ty {
        "b" => GValue::Bool(int(1)? != 0),
        "y" => GValue::Int(int(1)? as i64),
        "n" => GValue::Int(signed(int(2)?, 16)),
        "q" => GValue::Int(int(2)? as i64),
        "i" | "h" => GValue::Int(signed(int(4)?, 32)),
        "u" => GValue::Int(int(4)? as i64),
        "x" => GValue::Int(signed(int(8)?, 64)),
        "t" => GValue::Int(i64::try_from(int(8)?).unwrap_or(i64::MAX)),
        "d" => GValue::Double(f64::from_bits(int(8)? as u64)),
        "s" | "o" | "g" => {
            // A string's data ends with its own terminating zero.
            let s = data.strip_suffix(&[0])?;
            GValue::Str(String::from_utf8_lossy(s).into_owned())
        }
        other => GValue::Other(other.to_string()),
    })
}

/// Parses a GVDB file: its values by full key, and its `.locks` table.
pub fn parse(data: &[u8]) -> Result<Table, Malformed> {
    if data.len() < 24 {
        return Err(Malformed("shorter than a GVDB header"));
    }
    let big = match &data[..8] {
        b"GVariant" => cfg!(target_endian = "big"),
        b"raVGtnai" => cfg!(target_endian = "little"),
        _ => return Err(Malformed("no GVariant signature")),
    };
    let r = Reader { data, big };
    if r.u32_at(8) != Some(0) {
        return Err(Malformed("unknown GVDB version"));
    }
    r.table(16, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/screenlock");

    /// `dconf compile` output (GLib's own writer) reads back.
    #[test]
    fn reads_a_database_written_by_dconf() {
        let data = std::fs::read(format!("{FIXTURES}/dconf-user-gnome")).unwrap();
        let t = parse(&data).unwrap();
        assert_eq!(
            t.values.get("/org/gnome/desktop/session/idle-delay"),
            Some(&GValue::Int(600))
        );
        assert_eq!(
            t.values.get("/org/gnome/desktop/screensaver/lock-delay"),
            Some(&GValue::Int(30))
        );
        assert_eq!(
            t.values
                .get("/org/gnome/shell/welcome-dialog-last-shown-version"),
            Some(&GValue::Str("46.0".into()))
        );
        assert_eq!(
            t.values.get("/org/gnome/shell/favorite-apps"),
            Some(&GValue::Other("as".into()))
        );
        assert!(t.locks.is_empty());
    }

    /// `dconf update` output: a system database with a `.locks` table.
    #[test]
    fn reads_locks_of_a_system_database() {
        let data = std::fs::read(format!("{FIXTURES}/dconf-db-local-locked")).unwrap();
        let t = parse(&data).unwrap();
        assert_eq!(
            t.values.get("/org/gnome/desktop/screensaver/lock-enabled"),
            Some(&GValue::Bool(true))
        );
        let mut locks = t.locks.clone();
        locks.sort();
        assert_eq!(
            locks,
            [
                "/org/gnome/desktop/screensaver/lock-enabled",
                "/org/gnome/desktop/session/idle-delay"
            ]
        );
    }

    /// The crate's writer and this reader agree, including integer widths.
    #[test]
    fn reads_what_the_gvdb_crate_writes() {
        let data = crate::collectors::screenlock::tests::dconf_file(&[
            (
                "/org/mate/desktop/session/idle-delay",
                zbus::zvariant::Value::from(-3i32),
            ),
            ("/a/b/flag", zbus::zvariant::Value::from(false)),
            ("/a/big", zbus::zvariant::Value::from(u64::MAX)),
            ("/a/byte", zbus::zvariant::Value::from(7u8)),
            ("/a/short", zbus::zvariant::Value::from(-2i16)),
            ("/a/d", zbus::zvariant::Value::from(1.5f64)),
            ("/a/s", zbus::zvariant::Value::from("x y")),
        ]);
        let t = parse(&data).unwrap();
        assert_eq!(
            t.values["/org/mate/desktop/session/idle-delay"],
            GValue::Int(-3)
        );
        assert_eq!(t.values["/a/b/flag"], GValue::Bool(false));
        assert_eq!(t.values["/a/big"], GValue::Int(i64::MAX));
        assert_eq!(t.values["/a/byte"], GValue::Int(7));
        assert_eq!(t.values["/a/short"], GValue::Int(-2));
        assert_eq!(t.values["/a/d"], GValue::Double(1.5));
        assert_eq!(t.values["/a/s"], GValue::Str("x y".into()));
    }

    /// Truncations, garbage and a self-parented item: errors or fewer
    /// values, never a panic or an endless walk.
    #[test]
    fn hostile_input_is_harmless() {
        let good = std::fs::read(format!("{FIXTURES}/dconf-user-gnome")).unwrap();
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        let mut flipped = good.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = parse(&flipped);
            flipped[i] ^= 0xff;
        }
        assert_eq!(
            parse(b"not a gvdb file at all..").unwrap_err(),
            Malformed("no GVariant signature")
        );
        // Point every item's parent at itself: no key resolves.
        let mut looped = good.clone();
        let r = Reader {
            data: &good,
            big: false,
        };
        let start = r.u32_at(16).unwrap() as usize;
        let n_buckets = r.u32_at(start + 4).unwrap() as usize;
        let items = start + 8 + 4 * n_buckets;
        let end = r.u32_at(20).unwrap() as usize;
        for (i, base) in (items..end).step_by(ITEM).enumerate() {
            looped[base + 4..base + 8].copy_from_slice(&(i as u32).to_le_bytes());
        }
        assert!(parse(&looped).unwrap().values.is_empty());
    }
}

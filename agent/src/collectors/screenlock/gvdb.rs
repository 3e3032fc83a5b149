//! A bounded reader for GVariant database (GVDB) files, the format of
//! dconf databases (`~/.config/dconf/user`, `/etc/dconf/db/NAME`).
//!
//! The `gvdb` crate reads this format too, but its key lookup recurses
//! through parent items without a bound, so a crafted user database (the
//! user owns it; the agent runs as root) could overflow the agent's stack.
//! This reader walks the item array once, follows each parent chain for at
//! most [`MAX_DEPTH`] steps and decodes only the basic value types that
//! desktop settings use; anything odd is skipped, never trusted.
//!
//! Work is bounded too: a 16 MiB file holds ~700k items whose keys may
//! chain 64 parents of 64 KiB each and whose values may all point at the
//! same huge string. Only the keys the caller asks for are decoded (key
//! parts are measured and compared before anything is copied), a key may
//! be at most [`MAX_KEY`] bytes, parent steps are counted against
//! [`MAX_STEPS`] and decoded value bytes against [`MAX_DECODED`].

use std::collections::{BTreeMap, BTreeSet};

/// Longest parent chain followed (dconf paths are a few levels deep).
const MAX_DEPTH: usize = 64;
/// Longest full key considered (dconf keys are well under 100 bytes).
pub const MAX_KEY: usize = 1024;
/// Parent steps followed in one file, all tables together (a real
/// database needs a few per item).
const MAX_STEPS: usize = 1 << 22;
/// Largest value decoded (settings are numbers and short strings).
const MAX_VALUE: usize = 64 << 10;
/// Value bytes decoded in one file, all tables together.
const MAX_DECODED: usize = 1 << 20;
/// Largest file read (dconf user databases are a few KiB to a few hundred).
pub const MAX_FILE: u64 = 16 << 20;
/// Bytes of one hash item.
const ITEM: usize = 24;
/// The key of the locks table in a system database.
const LOCKS: &[u8] = b".locks";

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

/// The keys asked for, by length, so most items are dismissed by the
/// length of their key alone.
struct Wanted<'w> {
    keys: BTreeSet<&'w [u8]>,
    lengths: BTreeSet<usize>,
    longest: usize,
}

impl<'w> Wanted<'w> {
    fn new(keys: &[&'w str]) -> Self {
        let keys: BTreeSet<&[u8]> = keys
            .iter()
            .map(|k| k.as_bytes())
            .chain([LOCKS])
            .filter(|k| k.len() <= MAX_KEY)
            .collect();
        Self {
            lengths: keys.iter().map(|k| k.len()).collect(),
            longest: keys.iter().map(|k| k.len()).max().unwrap_or(0),
            keys,
        }
    }
}

/// Work left for the rest of the file.
#[derive(Clone, Copy)]
struct Budget {
    steps: usize,
    decoded: usize,
}

/// The file's structure is little-endian always; `big` says whether its
/// values are big-endian (a "byteswapped" file).
struct Reader<'a, 'w> {
    data: &'a [u8],
    big: bool,
    wanted: Wanted<'w>,
    budget: std::cell::Cell<Budget>,
}

impl Reader<'_, '_> {
    fn u32_at(&self, off: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    }

    fn u16_at(&self, off: usize) -> Option<u16> {
        let b: [u8; 2] = self.data.get(off..off.checked_add(2)?)?.try_into().ok()?;
        Some(u16::from_le_bytes(b))
    }

    /// The (start, end) bounds of a pointer at `off`, checked against the file.
    fn bounds(&self, off: usize, align: usize) -> Option<(usize, usize)> {
        let start = self.u32_at(off)? as usize;
        let end = self.u32_at(off.checked_add(4)?)? as usize;
        if start > end || !start.is_multiple_of(align) || end > self.data.len() {
            return None;
        }
        Some((start, end))
    }

    /// The bytes a (start, end) pointer at `off` points to.
    fn pointer(&self, off: usize, align: usize) -> Option<&[u8]> {
        let (start, end) = self.bounds(off, align)?;
        self.data.get(start..end)
    }

    /// Takes one parent step from the budget; false when it is spent.
    fn step(&self) -> bool {
        let mut b = self.budget.get();
        let ok = b.steps > 0;
        b.steps = b.steps.saturating_sub(1);
        self.budget.set(b);
        ok
    }

    /// Takes `n` decoded bytes from the budget; false when they are not left.
    fn spend(&self, n: usize) -> bool {
        let mut b = self.budget.get();
        let ok = b.decoded >= n;
        if ok {
            b.decoded -= n;
        }
        self.budget.set(b);
        ok
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
        let mut parts = Vec::with_capacity(MAX_DEPTH);
        let mut key = Vec::with_capacity(self.wanted.longest);
        for i in 0..n_items {
            let base = item_at(i);
            if !self.wanted_key(i, n_items, &item_at, &mut parts, &mut key)? {
                continue;
            }
            // Keys are ASCII paths; the set holds only valid UTF-8.
            let Ok(name) = std::str::from_utf8(&key) else {
                continue;
            };
            match self.data.get(base + 14) {
                Some(b'v') if name.as_bytes() != LOCKS && !out.values.contains_key(name) => {
                    let Some((vs, ve)) = self.bounds(base + 16, 8) else {
                        continue;
                    };
                    // Measured before copying: a huge value is skipped.
                    if ve - vs > MAX_VALUE {
                        continue;
                    }
                    if !self.spend(ve - vs) {
                        return Err(Malformed("values exceed the decoding limit"));
                    }
                    if let Some(v) = decode_variant(&self.data[vs..ve], self.big) {
                        out.values.insert(name.to_string(), v);
                    }
                }
                Some(b'H') if depth > 0 && name.as_bytes() == LOCKS => {
                    if let Ok(sub) = self.table(base + 16, depth - 1) {
                        out.locks.extend(sub.values.into_keys());
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// True when item `i`'s full key (its parents' keys before its own) is
    /// one asked for; the key is then in `key`. Parts are measured first
    /// and copied only when their total length could match.
    fn wanted_key(
        &self,
        i: usize,
        n_items: usize,
        item_at: &dyn Fn(usize) -> usize,
        parts: &mut Vec<(usize, usize)>,
        key: &mut Vec<u8>,
    ) -> Result<bool, Malformed> {
        parts.clear();
        let mut len = 0usize;
        let mut cur = i;
        for _ in 0..MAX_DEPTH {
            if !self.step() {
                return Err(Malformed("key chains exceed the work limit"));
            }
            let base = item_at(cur);
            let (Some(kstart), Some(ksize), Some(parent)) = (
                self.u32_at(base + 8),
                self.u16_at(base + 12),
                self.u32_at(base + 4),
            ) else {
                return Ok(false);
            };
            let (kstart, ksize) = (kstart as usize, ksize as usize);
            len += ksize;
            if len > self.wanted.longest || kstart.saturating_add(ksize) > self.data.len() {
                return Ok(false);
            }
            parts.push((kstart, ksize));
            if parent == u32::MAX {
                if !self.wanted.lengths.contains(&len) {
                    return Ok(false);
                }
                key.clear();
                for &(s, n) in parts.iter().rev() {
                    key.extend_from_slice(&self.data[s..s + n]);
                }
                return Ok(self.wanted.keys.contains(key.as_slice()));
            }
            cur = parent as usize;
            if cur >= n_items {
                return Ok(false);
            }
        }
        Ok(false)
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

/// Parses a GVDB file: the values of the keys in `wanted` (full paths;
/// others are skipped undecoded), and which of them the `.locks` table
/// lists.
pub fn parse(data: &[u8], wanted: &[&str]) -> Result<Table, Malformed> {
    if data.len() < 24 {
        return Err(Malformed("shorter than a GVDB header"));
    }
    let big = match &data[..8] {
        b"GVariant" => cfg!(target_endian = "big"),
        b"raVGtnai" => cfg!(target_endian = "little"),
        _ => return Err(Malformed("no GVariant signature")),
    };
    let r = Reader {
        data,
        big,
        wanted: Wanted::new(wanted),
        budget: std::cell::Cell::new(Budget {
            steps: MAX_STEPS,
            decoded: MAX_DECODED,
        }),
    };
    if r.u32_at(8) != Some(0) {
        return Err(Malformed("unknown GVDB version"));
    }
    r.table(16, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/screenlock");

    /// The keys the tests below look up.
    const KEYS: &[&str] = &[
        "/org/gnome/desktop/session/idle-delay",
        "/org/gnome/desktop/screensaver/lock-delay",
        "/org/gnome/desktop/screensaver/lock-enabled",
        "/org/gnome/shell/welcome-dialog-last-shown-version",
        "/org/gnome/shell/favorite-apps",
        "/org/mate/desktop/session/idle-delay",
        "/a/b/flag",
        "/a/big",
        "/a/byte",
        "/a/short",
        "/a/d",
        "/a/s",
    ];

    /// `dconf compile` output (GLib's own writer) reads back.
    #[test]
    fn reads_a_database_written_by_dconf() {
        let data = std::fs::read(format!("{FIXTURES}/dconf-user-gnome")).unwrap();
        let t = parse(&data, KEYS).unwrap();
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
        let t = parse(&data, KEYS).unwrap();
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
        let t = parse(&data, KEYS).unwrap();
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
            let _ = parse(&good[..n], KEYS);
        }
        let mut flipped = good.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = parse(&flipped, KEYS);
            flipped[i] ^= 0xff;
        }
        assert_eq!(
            parse(b"not a gvdb file at all..", KEYS).unwrap_err(),
            Malformed("no GVariant signature")
        );
        // Point every item's parent at itself: no key resolves.
        let mut looped = good.clone();
        let u32_at = |o: usize| u32::from_le_bytes(good[o..o + 4].try_into().unwrap()) as usize;
        let start = u32_at(16);
        let n_buckets = u32_at(start + 4);
        let items = start + 8 + 4 * n_buckets;
        let end = u32_at(20);
        for (i, base) in (items..end).step_by(ITEM).enumerate() {
            looped[base + 4..base + 8].copy_from_slice(&(i as u32).to_le_bytes());
        }
        assert!(parse(&looped, KEYS).unwrap().values.is_empty());
    }

    /// One hash item: (parent, key bytes at, key length, type, value at).
    type Item = (u32, u32, u16, u8, (u32, u32));

    /// A GVDB file with one table of `items` followed by `blob`; item
    /// offsets into the blob are relative and fixed up here.
    fn hand_made(items: &[Item], blob: &[u8]) -> Vec<u8> {
        let table = 24;
        let items_at = table + 12;
        let blob_at = (items_at + items.len() * ITEM).next_multiple_of(8);
        let mut f = Vec::with_capacity(blob_at + blob.len());
        f.extend_from_slice(b"GVariant");
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(table as u32).to_le_bytes());
        f.extend_from_slice(&((items_at + items.len() * ITEM) as u32).to_le_bytes());
        // No bloom filter, one bucket starting at item 0.
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        let b = blob_at as u32;
        for &(parent, kat, klen, ty, (vs, ve)) in items {
            f.extend_from_slice(&0u32.to_le_bytes());
            f.extend_from_slice(&parent.to_le_bytes());
            f.extend_from_slice(&(b + kat).to_le_bytes());
            f.extend_from_slice(&klen.to_le_bytes());
            f.extend_from_slice(&[ty, 0]);
            f.extend_from_slice(&(b + vs).to_le_bytes());
            f.extend_from_slice(&(b + ve).to_le_bytes());
        }
        f.resize(blob_at, 0);
        f.extend_from_slice(blob);
        f
    }

    /// A user database built to make a naive reader copy terabytes: 64
    /// chained parents of 64 KiB keys under 100k items, 100k copies of a
    /// wanted key whose value is the same 4 MiB string, and one honest
    /// key. The reader answers quickly with the honest key only.
    #[test]
    fn hostile_database_costs_little() {
        const LEAVES: u32 = 100_000;
        let wanted = b"/org/gnome/desktop/session/idle-delay";
        let honest = b"/org/gnome/desktop/screensaver/lock-delay";
        let mut blob = vec![b'a'; 65535];
        let wanted_at = blob.len() as u32;
        blob.extend_from_slice(wanted);
        let honest_at = blob.len() as u32;
        blob.extend_from_slice(honest);
        blob.resize(blob.len().next_multiple_of(8), 0);
        let small_at = blob.len() as u32;
        blob.extend_from_slice(&30u32.to_le_bytes());
        blob.extend_from_slice(b"\0u");
        let small = (small_at, blob.len() as u32);
        blob.resize(blob.len().next_multiple_of(8), 0);
        let huge_at = blob.len() as u32;
        blob.resize(blob.len() + (4 << 20), b'x');
        blob.extend_from_slice(b"\0\0s");
        let huge = (huge_at, blob.len() as u32);

        let mut items: Vec<Item> = vec![(u32::MAX, honest_at, honest.len() as u16, b'v', small)];
        // Items 1..=64: a chain of 64 KiB keys.
        items.push((u32::MAX, 0, 65535, b'L', (0, 0)));
        for i in 2..=64 {
            items.push((i - 1, 0, 65535, b'L', (0, 0)));
        }
        for _ in 0..LEAVES {
            items.push((64, 0, 1, b'v', huge));
            items.push((u32::MAX, wanted_at, wanted.len() as u16, b'v', huge));
        }
        let data = hand_made(&items, &blob);
        assert!(data.len() as u64 <= MAX_FILE);

        let t0 = std::time::Instant::now();
        let t = parse(&data, KEYS).unwrap();
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(
            t.values.get("/org/gnome/desktop/screensaver/lock-delay"),
            Some(&GValue::Int(30))
        );
        assert_eq!(t.values.get("/org/gnome/desktop/session/idle-delay"), None);
        assert_eq!(t.values.len(), 1, "nothing else decoded");
    }

    /// Chains of empty keys cost steps without growing a key: the step
    /// budget ends the walk with an error.
    #[test]
    fn endless_parent_walks_run_out_of_budget() {
        let mut items: Vec<Item> = vec![(u32::MAX, 0, 0, b'L', (0, 0))];
        for i in 1..MAX_DEPTH as u32 - 1 {
            items.push((i - 1, 0, 0, b'L', (0, 0)));
        }
        let deepest = items.len() as u32 - 1;
        for _ in 0..(MAX_STEPS / MAX_DEPTH + 1000) {
            items.push((deepest, 0, 0, b'v', (0, 0)));
        }
        let data = hand_made(&items, b"");
        assert_eq!(
            parse(&data, KEYS).unwrap_err(),
            Malformed("key chains exceed the work limit")
        );
    }
}

//! Block device stacks from sysfs: what a device sits on, layer by layer,
//! down to the disks, and whether dm-crypt is on every way down.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::io;

use penguindome_protocol::facts::Known;

use super::parse::{self, Mount};
use super::{FsClass, classify_fs};
use crate::host::Host;

/// Deepest stack followed (real ones are under 8; this also stops loops).
const MAX_DEPTH: usize = 24;
/// Most sysfs nodes visited for one question, so a huge or cyclic tree ends.
const MAX_NODES: usize = 1024;

/// What a layer does to the data passing through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// dm-crypt (or a drive's own encryption managed by cryptsetup).
    Encrypts,
    /// Maps data through unchanged (LVM, RAID, partitions...).
    Passes,
    /// Could encrypt or not; the reason says what would tell.
    Unclear(String),
}

/// One layer of a stack, e.g. `luks2 nvme0n1p3_crypt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Stable type name: luks2, lvm, partition, disk...
    pub kind: String,
    /// Mapper name for device-mapper devices, kernel name otherwise.
    pub name: String,
    /// What it does to the data.
    pub effect: Effect,
}

/// Where a way down the stack ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A disk (the last layer).
    Disk {
        /// Removable medium or attached over USB.
        removable: bool,
    },
    /// A device named like a disk or partition that sysfs does not show.
    Unseen,
    /// Memory (zram, ram disks, tmpfs): nothing reaches a disk.
    Ram,
    /// The walk could not go on; the reason says why.
    Unknown(String),
}

/// One way from a device down to where its data is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackPath {
    /// Layers from top to bottom.
    pub layers: Vec<Layer>,
    /// Where it ends.
    pub end: End,
}

/// The answer for one device or a set of them; for several ways down the
/// worst one (the greatest) wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Only memory below (zram swap): fine.
    InRam,
    /// dm-crypt on every way down (memory on some is fine too).
    Encrypted,
    /// Cannot tell.
    Unknown,
    /// At least one way down reaches a disk without encryption.
    Plain,
}

impl Verdict {
    /// The reported `encrypted`: memory counts as encrypted.
    pub fn known(self) -> Known<bool> {
        match self {
            Verdict::Encrypted | Verdict::InRam => Known::Value(true),
            Verdict::Plain => Known::Value(false),
            Verdict::Unknown => Known::UNKNOWN,
        }
    }

    /// True when this counts as encrypted for the overall answer.
    pub fn is_fine(self) -> bool {
        matches!(self, Verdict::Encrypted | Verdict::InRam)
    }
}

impl StackPath {
    fn ending(end: End) -> Self {
        Self {
            layers: vec![],
            end,
        }
    }

    pub fn under(mut self, layer: &Layer) -> Self {
        self.layers.insert(0, layer.clone());
        self
    }

    /// This way down's verdict: a dm-crypt layer anywhere makes it encrypted.
    pub fn verdict(&self) -> Verdict {
        if self.layers.iter().any(|l| l.effect == Effect::Encrypts) {
            return Verdict::Encrypted;
        }
        if self
            .layers
            .iter()
            .any(|l| matches!(l.effect, Effect::Unclear(_)))
        {
            return Verdict::Unknown;
        }
        match self.end {
            End::Disk { .. } | End::Unseen => Verdict::Plain,
            End::Ram => Verdict::InRam,
            End::Unknown(_) => Verdict::Unknown,
        }
    }

    /// Why this way down cannot be judged, if it cannot.
    fn doubt(&self) -> Option<String> {
        let unclear = self.layers.iter().find_map(|l| match &l.effect {
            Effect::Unclear(why) => Some(why.clone()),
            _ => None,
        });
        match &self.end {
            End::Unknown(why) => Some(unclear.unwrap_or_else(|| why.clone())),
            _ => unclear,
        }
    }

    /// `lvm vg-root > luks2 sda3_crypt > partition sda3 > disk sda`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{} {}", l.kind, l.name))
            .collect();
        match &self.end {
            End::Unknown(_) if self.verdict() != Verdict::Encrypted => parts.push("?".to_string()),
            End::Unseen => {
                if let Some(last) = parts.last_mut() {
                    last.push_str(" (no /sys/class/block entry)");
                }
            }
            _ => {}
        }
        parts.join(" > ")
    }
}

/// What the stacks under one filesystem or swap device come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The answer.
    pub verdict: Verdict,
    /// Layer kinds from top to bottom, each once.
    pub layers: Vec<String>,
    /// Why, for the admin: the context, the stacks seen, the conclusion.
    pub evidence: Vec<String>,
    /// Every way down ends on a removable or USB disk.
    pub removable: bool,
}

impl Judgement {
    /// A judgement without a stack (ZFS, ecryptfs, unresolvable devices).
    pub fn plainly(verdict: Verdict, layers: &[&str], evidence: String) -> Self {
        Self {
            verdict,
            layers: layers.iter().map(|s| s.to_string()).collect(),
            evidence: vec![evidence],
            removable: false,
        }
    }

    /// Judges the ways down; `context` (btrfs spans, swap file) leads the evidence.
    pub fn of(paths: &[StackPath], context: Option<&str>) -> Self {
        let mut layers: Vec<String> = Vec::new();
        for l in paths.iter().flat_map(|p| &p.layers) {
            if !layers.contains(&l.kind) {
                layers.push(l.kind.clone());
            }
        }
        let verdict = paths
            .iter()
            .map(StackPath::verdict)
            .max()
            .unwrap_or(Verdict::Unknown);
        let all: BTreeSet<String> = paths.iter().map(StackPath::describe).collect();
        let stack = all.into_iter().collect::<Vec<_>>().join("; ");
        let mut evidence: Vec<String> = context.map(str::to_string).into_iter().collect();
        if !stack.is_empty() {
            evidence.push(format!("sysfs stack: {stack}"));
        }
        evidence.push(conclusion(verdict, paths));
        let removable =
            !paths.is_empty() && paths.iter().all(|p| p.end == End::Disk { removable: true });
        Self {
            verdict,
            layers,
            evidence,
            removable,
        }
    }
}

/// The verdict on the ways down, in words.
fn conclusion(verdict: Verdict, paths: &[StackPath]) -> String {
    let joined = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>().join("; ");
    match verdict {
        Verdict::Encrypted => {
            let kinds: BTreeSet<&str> = paths
                .iter()
                .flat_map(|p| &p.layers)
                .filter(|l| l.effect == Effect::Encrypts)
                .map(|l| l.kind.as_str())
                .collect();
            format!(
                "dm-crypt ({}) on every way down to the disks",
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        Verdict::InRam => "memory only, nothing is written to a disk".to_string(),
        Verdict::Plain => {
            let plain: BTreeSet<String> = paths
                .iter()
                .filter(|p| p.verdict() == Verdict::Plain)
                .map(|p| p.describe())
                .collect();
            if plain.len() == paths.len() {
                "no dm-crypt layer between the filesystem and the disk".to_string()
            } else {
                format!("no dm-crypt layer on {}", joined(plain))
            }
        }
        Verdict::Unknown => {
            let why: BTreeSet<String> = paths.iter().filter_map(StackPath::doubt).collect();
            if why.is_empty() {
                "no device stack found".to_string()
            } else {
                format!("cannot tell: {}", joined(why))
            }
        }
    }
}

/// The block devices under a mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    /// The device the mount names, by kernel name.
    pub top: String,
    /// Every device holding the filesystem (several for btrfs and bcachefs).
    pub all: Vec<String>,
    /// How `all` was found, when it is more than `top`.
    pub note: Option<String>,
}

/// Layer type and effect of a device-mapper device, from its dm uuid.
/// cryptsetup names its devices `CRYPT-<TYPE>-...`; LVM uses `LVM-`.
pub fn classify_dm(uuid: &str) -> (String, Effect) {
    if let Some(rest) = uuid.strip_prefix("CRYPT-") {
        if rest.starts_with("LUKS2-OPAL-") {
            return ("luks2-opal".into(), Effect::Encrypts);
        }
        let sub = rest.split('-').next().unwrap_or("");
        let (kind, effect) = match sub {
            "LUKS1" => ("luks1", Effect::Encrypts),
            "LUKS2" => ("luks2", Effect::Encrypts),
            "PLAIN" => ("dm-crypt-plain", Effect::Encrypts),
            "LOOPAES" => ("loop-aes", Effect::Encrypts),
            "TCRYPT" => ("tcrypt", Effect::Encrypts),
            "BITLK" => ("bitlocker", Effect::Encrypts),
            "FVAULT2" => ("filevault2", Effect::Encrypts),
            // Integrity and verity only check data; SUBDEV is the integrity
            // device cryptsetup puts under an authenticated LUKS2 mapping.
            "VERITY" => ("dm-verity", Effect::Passes),
            "INTEGRITY" | "SUBDEV" => ("dm-integrity", Effect::Passes),
            other => {
                return (
                    format!("cryptsetup-{}", other.to_ascii_lowercase()),
                    Effect::Unclear(format!(
                        "dm uuid type CRYPT-{other} is not one this collector knows; `dmsetup table` would show whether it is a crypt target"
                    )),
                );
            }
        };
        return (kind.into(), effect);
    }
    let kind = if uuid.starts_with("LVM-") {
        "lvm"
    } else if uuid.starts_with("mpath-") {
        "multipath"
    } else if uuid.starts_with("part") && uuid.contains("-") {
        // kpartx partitions on a dm device: part1-mpath-...
        "partition"
    } else if uuid.starts_with("DMRAID-") {
        "dmraid"
    } else if uuid.starts_with("stratis-") {
        "stratis"
    } else if uuid.starts_with("VDO-") {
        "vdo"
    } else {
        // No uuid (or one of an unknown tool): the target could be crypt.
        return (
            "dm".into(),
            Effect::Unclear(format!(
                "device-mapper device with dm uuid {:?} names no known tool; `dmsetup table` would show whether it is a crypt target",
                uuid
            )),
        );
    };
    (kind.into(), Effect::Passes)
}

/// True for kernel names of disks and partitions (never device-mapper).
fn disk_like(name: &str) -> bool {
    ["sd", "vd", "hd", "xvd", "nvme", "mmcblk"]
        .iter()
        .any(|p| name.starts_with(p))
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// dm name LVM gives VG/LV (dashes in either doubled).
fn lvm_dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// The machine's mounts and sysfs, for walking device stacks.
pub struct Machine<'a> {
    /// The machine.
    pub host: &'a Host,
    /// /proc/self/mounts.
    pub mounts: &'a [Mount],
    mountinfo: Option<String>,
    nodes: Cell<usize>,
}

impl<'a> Machine<'a> {
    /// A walker over `host` with its mount table.
    pub fn new(host: &'a Host, mounts: &'a [Mount]) -> Self {
        Self {
            host,
            mounts,
            mountinfo: host.read_to_string("/proc/self/mountinfo").ok(),
            nodes: Cell::new(0),
        }
    }

    /// A sysfs attribute: None when absent, Err (with the path) when unreadable.
    fn attr(&self, path: &str) -> Result<Option<String>, String> {
        match self.host.read_to_string(path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{path} is unreadable ({e})")),
        }
    }

    /// Follows symbolic links of a /dev path (by-uuid, mapper, VG/LV links).
    fn follow_links(&self, path: &str) -> String {
        let mut p = parse::normalize(path);
        for _ in 0..MAX_DEPTH {
            let Ok(target) = self.host.read_link(&p) else {
                break;
            };
            let t = target.to_string_lossy();
            p = if t.starts_with('/') {
                parse::normalize(&t)
            } else {
                parse::normalize(&format!("{p}/../{t}"))
            };
        }
        p
    }

    /// The dm-N device whose mapper name is `name`.
    fn dm_by_name(&self, name: &str) -> Option<String> {
        self.host
            .list_dir("/sys/class/block")
            .into_iter()
            .filter(|n| n.starts_with("dm-"))
            .find(|n| {
                self.attr(&format!("/sys/class/block/{n}/dm/name"))
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == name)
            })
    }

    /// The kernel name of a device given by path, symlink or UUID=/LABEL=.
    pub fn resolve_device(&self, source: &str) -> Result<String, String> {
        let path = match source.split_once('=') {
            Some(("UUID", v)) => format!("/dev/disk/by-uuid/{v}"),
            Some(("LABEL", v)) => format!("/dev/disk/by-label/{v}"),
            Some(("PARTUUID", v)) => format!("/dev/disk/by-partuuid/{v}"),
            Some(("PARTLABEL", v)) => format!("/dev/disk/by-partlabel/{v}"),
            _ => source.to_string(),
        };
        if !path.starts_with("/dev/") {
            return Err(format!("{source} is not a device path"));
        }
        let path = self.follow_links(&path);
        if let Some(name) = path.strip_prefix("/dev/mapper/") {
            return self.dm_by_name(name).ok_or_else(|| {
                format!("no device-mapper device is named {name} (/sys/class/block/dm-*/dm/name)")
            });
        }
        let rest = path.strip_prefix("/dev/").unwrap_or(&path);
        // The kernel writes '/' in device names (cciss/c0d0) as '!' in sysfs.
        let kname = rest.replace('/', "!");
        if self.host.exists(&format!("/sys/class/block/{kname}"))
            || (!rest.contains('/') && disk_like(rest))
        {
            return Ok(kname);
        }
        if let Some((vg, lv)) = rest.split_once('/')
            && !lv.contains('/')
            && let Some(n) = self.dm_by_name(&lvm_dm_name(vg, lv))
        {
            return Ok(n);
        }
        let shown = if path == source {
            path
        } else {
            format!("{source} resolves to {path}, which")
        };
        Err(format!("{shown} has no /sys/class/block entry"))
    }

    /// The kernel name of device `major:minor`, from /sys/dev/block or a scan.
    fn by_devnum(&self, major: u32, minor: u32) -> Option<String> {
        if let Ok(t) = self
            .host
            .read_link(&format!("/sys/dev/block/{major}:{minor}"))
        {
            return t.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        let want = format!("{major}:{minor}");
        self.host
            .list_dir("/sys/class/block")
            .into_iter()
            .find(|n| {
                self.attr(&format!("/sys/class/block/{n}/dev"))
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == want)
            })
    }

    /// The kernel name of a mount's device; /proc/self/mountinfo's device
    /// number helps when the source names no node (/dev/root).
    fn resolve_mount(&self, m: &Mount) -> Result<String, String> {
        self.resolve_device(&m.source).or_else(|why| {
            let (major, minor) = parse::mountinfo_device(
                self.mountinfo.as_deref().unwrap_or(""),
                &m.mountpoint,
                &m.source,
            )
            .ok_or_else(|| why.clone())?;
            if major == 0 {
                return Err(format!(
                    "{why}; mountinfo shows no block device (0:{minor})"
                ));
            }
            self.by_devnum(major, minor).ok_or_else(|| {
                format!("{why}; mountinfo's device {major}:{minor} is not in /sys/dev/block")
            })
        })
    }

    /// The btrfs filesystem (fsid) that has `name` among its devices, and all its devices.
    fn btrfs_devices(&self, name: &str) -> Option<(String, Vec<String>)> {
        self.host
            .list_dir("/sys/fs/btrfs")
            .into_iter()
            .filter(|f| f != "features")
            .find_map(|fsid| {
                let devs = self.host.list_dir(&format!("/sys/fs/btrfs/{fsid}/devices"));
                devs.iter().any(|d| d == name).then_some((fsid, devs))
            })
    }

    /// The devices holding a mounted block filesystem.
    pub fn devices_of(&self, m: &Mount) -> Result<Devices, String> {
        if m.fstype == "bcachefs" && m.source.contains(':') {
            // bcachefs names all its devices in the source: /dev/sda:/dev/sdb.
            let all = m
                .source
                .split(':')
                .map(|s| self.resolve_device(s))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Devices {
                top: all[0].clone(),
                note: Some(format!("bcachefs spans {}", all.join(", "))),
                all,
            });
        }
        let top = self.resolve_mount(m)?;
        if m.fstype == "btrfs"
            && let Some((fsid, devs)) = self.btrfs_devices(&top)
            && devs.len() > 1
        {
            let names: Vec<String> = devs.iter().map(|d| self.label(d)).collect();
            return Ok(Devices {
                top,
                note: Some(format!(
                    "btrfs {fsid} spans {} (/sys/fs/btrfs/{fsid}/devices)",
                    names.join(", ")
                )),
                all: devs,
            });
        }
        Ok(Devices {
            all: vec![top.clone()],
            top,
            note: None,
        })
    }

    /// A name for `kname` that survives reboots: the mapper name for dm devices.
    pub fn label(&self, kname: &str) -> String {
        self.attr(&format!("/sys/class/block/{kname}/dm/name"))
            .ok()
            .flatten()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| kname.to_string())
    }

    /// The device to show for `kname`: /dev/mapper/NAME for dm devices and
    /// the backing file for loop devices, whose numbers change between boots.
    pub fn display(&self, kname: &str) -> String {
        let label = self.label(kname);
        if label != kname {
            return format!("/dev/mapper/{label}");
        }
        if kname.starts_with("loop")
            && let Ok(Some(file)) =
                self.attr(&format!("/sys/class/block/{kname}/loop/backing_file"))
            && !file.is_empty()
        {
            return file;
        }
        format!("/dev/{}", kname.replace('!', "/"))
    }

    /// The ways down from a device (a fresh walk: the node budget restarts).
    pub fn stack(&self, kname: &str) -> Vec<StackPath> {
        self.nodes.set(0);
        self.walk(kname, &mut Vec::new())
    }

    /// The ways down from the storage of a regular file (swap files).
    pub fn file_stack(&self, path: &str) -> Vec<StackPath> {
        self.nodes.set(0);
        self.walk_file(path, &mut Vec::new())
    }

    /// Index of the mount holding `path` (deepest mountpoint, the later of
    /// two on the same one since it hides the earlier), except `skip`.
    pub fn containing_mount(&self, path: &str, skip: Option<usize>) -> Option<usize> {
        self.mounts
            .iter()
            .enumerate()
            .filter(|(i, m)| Some(*i) != skip && parse::is_under(path, &m.mountpoint))
            .max_by_key(|(i, m)| (m.mountpoint.len(), *i))
            .map(|(i, _)| i)
    }

    fn walk_file(&self, path: &str, chain: &mut Vec<String>) -> Vec<StackPath> {
        let Some(i) = self.containing_mount(path, None) else {
            return vec![StackPath::ending(End::Unknown(format!(
                "no mounted filesystem holds {path}"
            )))];
        };
        let m = &self.mounts[i];
        let on = Layer {
            kind: m.fstype.clone(),
            name: m.mountpoint.clone(),
            effect: Effect::Passes,
        };
        match classify_fs(&m.fstype) {
            FsClass::Block => match self.devices_of(m) {
                Ok(d) => d.all.iter().flat_map(|n| self.walk(n, chain)).collect(),
                Err(why) => vec![StackPath::ending(End::Unknown(why))],
            },
            FsClass::Memory => vec![StackPath::ending(End::Ram).under(&on)],
            FsClass::Encrypting(kind) => vec![
                StackPath::ending(End::Unknown(format!("{kind} stores the files"))).under(&Layer {
                    kind: kind.to_string(),
                    name: m.mountpoint.clone(),
                    effect: Effect::Encrypts,
                }),
            ],
            _ => vec![
                StackPath::ending(End::Unknown(format!(
                    "{path} is on {} {} ({}), which has no local block device",
                    m.fstype, m.mountpoint, m.source
                )))
                .under(&on),
            ],
        }
    }

    fn walk(&self, name: &str, chain: &mut Vec<String>) -> Vec<StackPath> {
        let visited = self.nodes.get() + 1;
        self.nodes.set(visited);
        if chain.iter().any(|c| c == name) {
            return vec![StackPath::ending(End::Unknown(format!(
                "sysfs shows {} below itself",
                self.label(name)
            )))];
        }
        if chain.len() > MAX_DEPTH || visited > MAX_NODES {
            return vec![StackPath::ending(End::Unknown(format!(
                "the stack under {} is deeper or wider than this collector follows",
                self.label(name)
            )))];
        }
        chain.push(name.to_string());
        let paths = self.walk_node(name, chain);
        chain.pop();
        paths
    }

    fn walk_node(&self, name: &str, chain: &mut Vec<String>) -> Vec<StackPath> {
        let base = format!("/sys/class/block/{name}");
        if !self.host.exists(&base) {
            return vec![if disk_like(name) {
                StackPath::ending(End::Unseen).under(&Layer {
                    kind: "disk".into(),
                    name: name.into(),
                    effect: Effect::Passes,
                })
            } else {
                StackPath::ending(End::Unknown(format!("{base} does not exist")))
            }];
        }
        let has = |sub: &str| self.host.exists(&format!("{base}/{sub}"));
        if has("dm") {
            self.walk_dm(name, &base, chain)
        } else if has("md") {
            let level = self.attr(&format!("{base}/md/level")).ok().flatten();
            let kind = level.map_or("md".to_string(), |l| format!("md-{l}"));
            self.below(layer(&kind, name), self.slaves(&base), chain)
        } else if has("partition") {
            let me = layer("partition", name);
            match self.partition_parent(name, &base) {
                Some(disk) => self.below(me, vec![disk], chain),
                None => vec![
                    StackPath::ending(End::Unknown(format!(
                        "cannot find the disk of partition {name} in sysfs"
                    )))
                    .under(&me),
                ],
            }
        } else if has("loop") {
            self.walk_loop(name, &base, chain)
        } else if name.starts_with("zram") {
            self.walk_zram(name, &base, chain)
        } else if name.starts_with("ram") && name[3..].bytes().all(|b| b.is_ascii_digit()) {
            vec![StackPath::ending(End::Ram).under(&layer("ram", name))]
        } else {
            let slaves = self.slaves(&base);
            if slaves.is_empty() {
                let removable = self
                    .attr(&format!("{base}/removable"))
                    .is_ok_and(|v| v.as_deref() == Some("1"))
                    || self
                        .host
                        .read_link(&base)
                        .is_ok_and(|t| t.to_string_lossy().contains("/usb"));
                vec![StackPath::ending(End::Disk { removable }).under(&layer("disk", name))]
            } else {
                // Other stacking drivers (bcache...): named by their prefix.
                let kind: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                self.below(layer(&kind, name), slaves, chain)
            }
        }
    }

    fn slaves(&self, base: &str) -> Vec<String> {
        self.host.list_dir(&format!("{base}/slaves"))
    }

    /// The ways down through `me` to each of `children`.
    fn below(&self, me: Layer, children: Vec<String>, chain: &mut Vec<String>) -> Vec<StackPath> {
        if children.is_empty() {
            let why = format!(
                "{} {} shows no devices under it in sysfs (slaves/)",
                me.kind, me.name
            );
            return vec![StackPath::ending(End::Unknown(why)).under(&me)];
        }
        children
            .iter()
            .flat_map(|c| self.walk(c, chain))
            .map(|p| p.under(&me))
            .collect()
    }

    fn walk_dm(&self, name: &str, base: &str, chain: &mut Vec<String>) -> Vec<StackPath> {
        let (kind, effect) = match self.attr(&format!("{base}/dm/uuid")) {
            Ok(uuid) => classify_dm(uuid.as_deref().unwrap_or("")),
            Err(why) => ("dm".to_string(), Effect::Unclear(why)),
        };
        let me = Layer {
            kind,
            name: self.label(name),
            effect,
        };
        self.below(me, self.slaves(base), chain)
    }

    /// The disk a partition belongs to: its parent in the kernel's device
    /// path, else its name without the partition number.
    fn partition_parent(&self, name: &str, base: &str) -> Option<String> {
        if let Ok(target) = self.host.read_link(base) {
            let parts: Vec<String> = target
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.len() >= 2 && parts[parts.len() - 1] == name {
                let parent = &parts[parts.len() - 2];
                if self.host.exists(&format!("/sys/class/block/{parent}")) {
                    return Some(parent.clone());
                }
            }
        }
        let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
        // nvme0n1p3, mmcblk0p1, md0p1: a 'p' follows a digit.
        let stem = match stem.strip_suffix('p') {
            Some(s) if s.ends_with(|c: char| c.is_ascii_digit()) => s,
            _ => stem,
        };
        (stem != name && self.host.exists(&format!("/sys/class/block/{stem}")))
            .then(|| stem.to_string())
    }

    fn walk_loop(&self, name: &str, base: &str, chain: &mut Vec<String>) -> Vec<StackPath> {
        match self.attr(&format!("{base}/loop/backing_file")) {
            Ok(Some(file)) if !file.is_empty() => {
                let me = layer("loop", &file);
                self.walk_file(file.trim_end_matches(" (deleted)"), chain)
                    .into_iter()
                    .map(|p| p.under(&me))
                    .collect()
            }
            Ok(_) => vec![
                StackPath::ending(End::Unknown(format!("{base}/loop/backing_file is missing")))
                    .under(&layer("loop", name)),
            ],
            Err(why) => vec![StackPath::ending(End::Unknown(why)).under(&layer("loop", name))],
        }
    }

    fn walk_zram(&self, name: &str, base: &str, chain: &mut Vec<String>) -> Vec<StackPath> {
        let me = layer("zram", name);
        // With a backing device, zram writes idle pages to it as they are.
        match self.attr(&format!("{base}/backing_dev")) {
            Ok(Some(dev)) if !dev.is_empty() && dev != "none" => match self.resolve_device(&dev) {
                Ok(k) => self
                    .walk(&k, chain)
                    .into_iter()
                    .map(|p| p.under(&me))
                    .collect(),
                Err(why) => vec![StackPath::ending(End::Unknown(why)).under(&me)],
            },
            Err(why) => vec![StackPath::ending(End::Unknown(why)).under(&me)],
            _ => vec![StackPath::ending(End::Ram).under(&me)],
        }
    }
}

fn layer(kind: &str, name: &str) -> Layer {
    Layer {
        kind: kind.to_string(),
        name: name.to_string(),
        effect: Effect::Passes,
    }
}

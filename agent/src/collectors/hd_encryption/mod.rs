//! hd_encryption: is every block device that holds a mounted filesystem
//! or active swap encrypted?
//!
//! Mounts come from /proc/self/mounts and swap from /proc/swaps. Each
//! device is resolved to its kernel name and its stack walked through
//! sysfs (`/sys/class/block/<name>/dm/uuid`, `slaves/`, `partition`, `md/`)
//! down to the disks. A device counts as encrypted when a dm-crypt layer
//! (cryptsetup's `CRYPT-LUKS1-`, `CRYPT-LUKS2-`, `CRYPT-PLAIN-`... dm uuids)
//! is on every way down, so LVM on LUKS, LUKS on LVM, volume groups over
//! several PVs, md RAID over LUKS and LUKS over md RAID all come out right,
//! and one plain PV under a volume group makes it unencrypted. btrfs and
//! bcachefs count every device of the filesystem. No program is run.
//!
//! Not judged: pseudo and memory filesystems and read-only images
//! (squashfs snaps, erofs) are skipped; network and FUSE filesystems are
//! listed under `remote`; /boot, /efi and /boot/* partitions under
//! `exempt`, since the firmware or boot loader reads them before any key
//! is entered (a device also mounted elsewhere, like a btrfs subvolume of
//! the root filesystem at /boot/grub2, is judged).
//!
//! Removable media (sysfs `removable` is 1, or the disk hangs off USB) go
//! under `removable`, with the fields of `filesystems`, and do not count
//! towards `encrypted`: a USB stick comes and goes, and whether plain ones
//! are allowed is a policy of its own.
//!
//! zram swap is RAM and counts as fine; a swap file is as encrypted as the
//! filesystem holding it. A device mounted several times (bind mounts,
//! btrfs subvolumes) is listed once, at its first mountpoint in sort
//! order. `device` is the /dev/mapper name of device-mapper devices and
//! the backing file of loop devices, since dm-N and loopN numbers change
//! between boots; `layers` lists each layer type once, top to bottom.
//! `encrypted` is true only when every judged filesystem and swap device
//! is; an "unknown" one makes it false, and `evidence` names it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use penguindome_protocol::facts::hd_encryption::{self as facts, Exempt, Filesystem, Mount, Swap};
use penguindome_protocol::facts::to_value;
use serde_json::Value;

use super::{CollectError, Collector, Context};

pub(crate) mod parse;
mod stack;
#[cfg(test)]
mod tests;

use stack::{Effect, Judgement, Layer, Machine, StackPath, Verdict};

/// The collector.
pub struct HdEncryption;

/// How a filesystem type is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsClass {
    /// Kernel interfaces and read-only images: skipped.
    Pseudo,
    /// Lives in memory (tmpfs): skipped; files on it never reach a disk.
    Memory,
    /// Network or FUSE: listed as remote, not judged.
    Remote,
    /// Encrypts each file itself (ecryptfs, gocryptfs...).
    Encrypting(&'static str),
    /// ZFS: encryption is a dataset property sysfs does not show.
    Zfs,
    /// overlay: judged through the filesystem holding its upper directory.
    Overlay,
    /// On block devices: judged.
    Block,
}

/// Classifies a filesystem type from /proc/self/mounts.
pub fn classify_fs(fstype: &str) -> FsClass {
    const MEMORY: &[&str] = &["tmpfs", "ramfs", "devtmpfs", "rootfs"];
    const PSEUDO: &[&str] = &[
        "proc",
        "sysfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "mqueue",
        "hugetlbfs",
        "configfs",
        "fusectl",
        "autofs",
        "efivarfs",
        "binfmt_misc",
        "nsfs",
        "rpc_pipefs",
        "nfsd",
        "selinuxfs",
        "smackfs",
        "sockfs",
        "pipefs",
        "anon_inodefs",
        "cpuset",
        "resctrl",
        "devfs",
        "usbfs",
        // Read-only images (snaps, composefs): no data of the machine's own.
        "squashfs",
        "erofs",
        "fuse.lxcfs",
        "fuse.portal",
        "fuse.xdg-document-portal",
        "fuse.snapfuse",
        // GNOME's per-session bridge to gvfs mounts under /run/user: it
        // comes and goes with logins and holds no data of its own.
        "fuse.gvfsd-fuse",
    ];
    const ENCRYPTING: &[(&str, &str)] = &[
        ("ecryptfs", "ecryptfs"),
        ("fuse.gocryptfs", "gocryptfs"),
        ("fuse.encfs", "encfs"),
        ("fuse.cryfs", "cryfs"),
        ("fuse.securefs", "securefs"),
    ];
    const REMOTE: &[&str] = &[
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "ceph",
        "glusterfs",
        "afs",
        "coda",
        "9p",
        "virtiofs",
        "lustre",
        "davfs",
        "vboxsf",
        "vmhgfs",
        "orangefs",
        "beegfs",
        "gpfs",
        "fuse",
    ];
    if MEMORY.contains(&fstype) {
        FsClass::Memory
    } else if PSEUDO.contains(&fstype) {
        FsClass::Pseudo
    } else if let Some((_, kind)) = ENCRYPTING.iter().find(|(t, _)| *t == fstype) {
        FsClass::Encrypting(kind)
    } else if fstype == "zfs" {
        FsClass::Zfs
    } else if fstype == "overlay" {
        FsClass::Overlay
    } else if REMOTE.contains(&fstype) || fstype.starts_with("fuse.") {
        // FUSE filesystems have no block device: their data is wherever the
        // daemon keeps it (sshfs, rclone...). fuseblk (ntfs-3g) has one.
        FsClass::Remote
    } else {
        FsClass::Block
    }
}

/// True for boot partitions: /boot, /efi and anything under /boot.
fn is_boot(mountpoint: &str) -> bool {
    mountpoint == "/boot" || mountpoint == "/efi" || mountpoint.starts_with("/boot/")
}

/// Why a boot partition is exempt.
fn boot_reason(fstype: &str) -> &'static str {
    if matches!(fstype, "vfat" | "msdos" | "fat") {
        "EFI system or firmware partition: the firmware reads it before any key can be entered, so it cannot be encrypted"
    } else {
        "boot partition: the boot loader reads the kernel and initramfs from it before the disks are unlocked"
    }
}

/// Mounts of one device (or one btrfs filesystem, one ecryptfs source...).
struct Group {
    mountpoints: BTreeSet<String>,
    device: String,
    fstype: String,
    judgement: Judgement,
}

/// What one mount is, before judging.
enum Target {
    /// Nothing to judge.
    Skip,
    /// Listed under remote.
    Remote,
    /// Judged already (no stack to walk).
    Ready {
        key: String,
        device: String,
        judgement: Judgement,
    },
    /// Block devices to walk.
    Devices(stack::Devices),
}

/// Why an overlay mount cannot be judged, or None when its writable layer
/// is on a filesystem that is judged (or skipped) on its own.
fn overlay_doubt(machine: &Machine<'_>, i: usize) -> Option<String> {
    let m = &machine.mounts[i];
    // Without an upper directory it writes nothing: its lower layers are images.
    let upper = parse::option(&m.options, "upperdir")?;
    match machine.containing_mount(upper, Some(i)) {
        Some(j) if classify_fs(&machine.mounts[j].fstype) != FsClass::Overlay => None,
        _ => {
            let hint = ["/.dockerenv", "/run/.containerenv"]
                .iter()
                .find(|f| machine.host.exists(f))
                .map(|f| format!(" ({f} exists: this is a container)"))
                .unwrap_or_default();
            Some(format!(
                "overlay at {} writes to {upper}, which is on no filesystem visible in this mount namespace{hint}; its disk can only be judged from the machine that runs the container",
                m.mountpoint
            ))
        }
    }
}

/// Sorts out one mount.
fn target(machine: &Machine<'_>, i: usize) -> Target {
    let m = &machine.mounts[i];
    match classify_fs(&m.fstype) {
        FsClass::Pseudo | FsClass::Memory => Target::Skip,
        FsClass::Remote => Target::Remote,
        FsClass::Encrypting(kind) => Target::Ready {
            key: format!("{kind}:{}", m.source),
            device: m.source.clone(),
            judgement: Judgement::plainly(
                Verdict::Encrypted,
                &[kind],
                format!(
                    "{} mount of {}: {kind} encrypts each file before it reaches the filesystem below",
                    m.fstype, m.source
                ),
            ),
        },
        FsClass::Zfs => Target::Ready {
            key: format!("zfs:{}", m.source),
            device: m.source.clone(),
            judgement: Judgement::plainly(
                Verdict::Unknown,
                &["zfs"],
                format!(
                    "ZFS dataset {}: native encryption is a dataset property (`zfs get encryption`) and ZFS does not list its disks in sysfs; this collector runs no programs",
                    m.source
                ),
            ),
        },
        FsClass::Overlay => match overlay_doubt(machine, i) {
            None => Target::Skip,
            Some(why) => Target::Ready {
                key: format!("overlay:{}", m.mountpoint),
                device: m.source.clone(),
                judgement: Judgement::plainly(Verdict::Unknown, &["overlay"], why),
            },
        },
        FsClass::Block => match machine.devices_of(m) {
            Ok(d) => Target::Devices(d),
            Err(why) => Target::Ready {
                key: format!("unresolved:{}:{}", m.fstype, m.source),
                device: m.source.clone(),
                judgement: Judgement::plainly(
                    Verdict::Unknown,
                    &[],
                    format!("cannot find the block device: {why}"),
                ),
            },
        },
    }
}

/// Mounts grouped by device, and the remote ones.
fn group_mounts(machine: &Machine<'_>) -> (BTreeMap<String, Group>, Vec<Mount>) {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut remote = BTreeSet::new();
    for (i, m) in machine.mounts.iter().enumerate() {
        let (key, device, judgement) = match target(machine, i) {
            Target::Skip => continue,
            Target::Remote => {
                remote.insert((m.mountpoint.clone(), m.source.clone(), m.fstype.clone()));
                continue;
            }
            Target::Ready {
                key,
                device,
                judgement,
            } => (key, device, Some(judgement)),
            Target::Devices(d) => {
                let mut all = d.all.clone();
                all.sort();
                let key = format!("dev:{}", all.join(","));
                // Bind mounts and subvolumes: the stack is walked once.
                let judgement = (!groups.contains_key(&key)).then(|| {
                    let paths: Vec<StackPath> =
                        d.all.iter().flat_map(|n| machine.stack(n)).collect();
                    Judgement::of(&paths, d.note.as_deref())
                });
                (key, machine.display(&d.top), judgement)
            }
        };
        if let Some(g) = groups.get_mut(&key) {
            g.mountpoints.insert(m.mountpoint.clone());
            continue;
        }
        let Some(judgement) = judgement else { continue };
        groups.insert(
            key,
            Group {
                mountpoints: BTreeSet::from([m.mountpoint.clone()]),
                device,
                fstype: m.fstype.clone(),
                judgement,
            },
        );
    }
    let remote = remote
        .into_iter()
        .map(|(mountpoint, device, fstype)| Mount {
            mountpoint,
            device,
            fstype,
        })
        .collect();
    (groups, remote)
}

/// One judged filesystem, at its first mountpoint.
fn fs_entry(mountpoint: &str, g: &Group) -> Filesystem {
    Filesystem {
        mountpoint: mountpoint.to_string(),
        device: g.device.clone(),
        fstype: g.fstype.clone(),
        encrypted: g.judgement.verdict.known(),
        layers: g.judgement.layers.clone(),
        evidence: g.judgement.evidence.clone(),
    }
}

/// One judged swap area.
fn swap_entry(device: String, kind: &str, j: Judgement) -> Swap {
    Swap {
        device,
        kind: kind.to_string(),
        encrypted: j.verdict.known(),
        layers: j.layers,
        evidence: j.evidence,
    }
}

/// Judges one line of /proc/swaps: (device shown, judgement).
fn judge_swap(machine: &Machine<'_>, s: &parse::Swap) -> (String, Judgement) {
    if s.kind == "file" || !s.filename.starts_with("/dev/") {
        let me = Layer {
            kind: "file".into(),
            name: s.filename.clone(),
            effect: Effect::Passes,
        };
        let paths: Vec<StackPath> = machine
            .file_stack(&s.filename)
            .into_iter()
            .map(|p| p.under(&me))
            .collect();
        let holder = machine
            .containing_mount(&s.filename, None)
            .map(|i| machine.mounts[i].mountpoint.clone())
            .unwrap_or_else(|| "?".into());
        let context = format!("swap file on the filesystem mounted at {holder}");
        return (s.filename.clone(), Judgement::of(&paths, Some(&context)));
    }
    match machine.resolve_device(&s.filename) {
        Ok(k) => (machine.display(&k), Judgement::of(&machine.stack(&k), None)),
        Err(why) => (
            s.filename.clone(),
            Judgement::plainly(
                Verdict::Unknown,
                &[],
                format!("cannot find the block device: {why}"),
            ),
        ),
    }
}

/// The swap list, sorted by device, plus notes on /proc/swaps itself.
fn swap_entries(machine: &Machine<'_>) -> (Vec<(String, Verdict)>, Vec<Swap>, Vec<String>) {
    let (swaps, notes) = match machine.host.read_to_string("/proc/swaps") {
        Ok(t) => parse::parse_swaps(&t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (
            vec![],
            vec!["/proc/swaps does not exist (kernel without swap support): no swap".into()],
        ),
        Err(e) => {
            let j = Judgement::plainly(
                Verdict::Unknown,
                &[],
                format!("/proc/swaps is unreadable ({e}), so active swap is unknown"),
            );
            return (
                vec![("/proc/swaps".into(), Verdict::Unknown)],
                vec![swap_entry("/proc/swaps".into(), "unknown", j)],
                vec![],
            );
        }
    };
    let mut out: BTreeMap<String, (Verdict, Swap)> = BTreeMap::new();
    for s in &swaps {
        let (device, j) = judge_swap(machine, s);
        let verdict = j.verdict;
        out.insert(device.clone(), (verdict, swap_entry(device, &s.kind, j)));
    }
    let verdicts = out.iter().map(|(d, (v, _))| (d.clone(), *v)).collect();
    let entries = out.into_values().map(|(_, e)| e).collect();
    (verdicts, entries, notes)
}

/// The overall evidence: the verdict, then the removable media set apart.
fn summary(judged: &[(String, Verdict)], removable: &[String], mounts_file: &str) -> Vec<String> {
    let overall = if judged.is_empty() {
        format!(
            "no filesystem or swap on a local block device is in use ({mounts_file}, /proc/swaps)"
        )
    } else {
        let named = |want: Verdict| {
            judged
                .iter()
                .filter(|(_, v)| *v == want)
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (plain, unknown) = (named(Verdict::Plain), named(Verdict::Unknown));
        let mut parts = Vec::new();
        if !plain.is_empty() {
            parts.push(format!("not encrypted: {plain}"));
        }
        if !unknown.is_empty() {
            parts.push(format!("cannot tell: {unknown}"));
        }
        if parts.is_empty() {
            parts.push("all encrypted (or in RAM)".into());
        }
        format!(
            "judged from {mounts_file}, /proc/swaps and /sys/class/block: {}",
            parts.join("; ")
        )
    };
    let mut evidence = vec![overall];
    if !removable.is_empty() {
        evidence.push(format!(
            "removable media listed apart and not counted: {}",
            removable.join(", ")
        ));
    }
    evidence
}

impl Collector for HdEncryption {
    fn name(&self) -> &'static str {
        "hd_encryption"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let (text, mounts_file) = match host.read_to_string("/proc/self/mounts") {
            Ok(t) => (t, "/proc/self/mounts"),
            Err(e) => (
                host.read_to_string("/proc/mounts").map_err(|_| {
                    CollectError(format!(
                        "cannot read /proc/self/mounts ({e}) or /proc/mounts: mount /proc so the agent can see the filesystems"
                    ))
                })?,
                "/proc/mounts",
            ),
        };
        let (mounts, mut notes) = parse::parse_mounts(&text);
        let machine = Machine::new(host, &mounts);
        let (groups, remote) = group_mounts(&machine);
        let Sorted {
            filesystems,
            removable,
            exempt,
            mut judged,
        } = sort_groups(&groups);
        let (swap_verdicts, swap, swap_notes) = swap_entries(&machine);
        notes.extend(swap_notes);
        judged.extend(
            swap_verdicts
                .into_iter()
                .map(|(d, v)| (format!("swap {d}"), v)),
        );
        let removable_at: Vec<String> = removable.iter().map(|f| f.mountpoint.clone()).collect();
        notes.sort();
        notes.dedup();
        Ok(to_value(&facts::HdEncryption {
            encrypted: judged.iter().all(|(_, v)| v.is_fine()),
            evidence: summary(&judged, &removable_at, mounts_file),
            filesystems,
            swap,
            exempt,
            remote,
            removable,
            notes,
        }))
    }
}

/// The device groups sorted out, each list by mountpoint.
struct Sorted {
    filesystems: Vec<Filesystem>,
    removable: Vec<Filesystem>,
    exempt: Vec<Exempt>,
    /// The verdicts that count, by mountpoint.
    judged: Vec<(String, Verdict)>,
}

/// Sorts the groups into judged, removable and exempt filesystems.
fn sort_groups(groups: &BTreeMap<String, Group>) -> Sorted {
    let (mut filesystems, mut removable, mut exempt, mut judged) = (vec![], vec![], vec![], vec![]);
    for g in groups.values() {
        // A device that is also mounted outside /boot (a btrfs @boot
        // subvolume of the root filesystem) is judged, not exempt.
        let Some(first) = g.mountpoints.iter().find(|m| !is_boot(m)) else {
            exempt.push(Exempt {
                mountpoint: g.mountpoints.first().cloned().unwrap_or_default(),
                device: g.device.clone(),
                reason: boot_reason(&g.fstype).to_string(),
            });
            continue;
        };
        if g.judgement.removable {
            removable.push(fs_entry(first, g));
        } else {
            judged.push((first.clone(), g.judgement.verdict));
            filesystems.push(fs_entry(first, g));
        }
    }
    filesystems.sort_by(|a: &Filesystem, b| a.mountpoint.cmp(&b.mountpoint));
    removable.sort_by(|a: &Filesystem, b| a.mountpoint.cmp(&b.mountpoint));
    exempt.sort_by(|a: &Exempt, b| a.mountpoint.cmp(&b.mountpoint));
    judged.sort();
    Sorted {
        filesystems,
        removable,
        exempt,
        judged,
    }
}

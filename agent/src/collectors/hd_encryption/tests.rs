//! Fixture trees modelled on real machines: /proc/self/mounts,
//! /proc/swaps, /sys/class/block and /dev/mapper laid out as the kernel
//! and udev do (class entries and slaves/ are symlinks into /sys/devices).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;

use super::*;
use crate::collectors::NoCache;
use crate::host::Host;
use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::hd_encryption::HdEncryption as Facts;

const NVME_BUS: &str = "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0";
const SATA_A: &str = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";
const SATA_B: &str = "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0";
const USB_STICK: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";

/// Pseudo filesystems every systemd machine has; the collector must skip them.
const PSEUDO_MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=8032780k,nr_inodes=2008195,mode=755,inode64 0 0
devpts /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=000 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=1612204k,mode=755,inode64 0 0
securityfs /sys/kernel/security securityfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev,inode64 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
pstore /sys/fs/pstore pstore rw,nosuid,nodev,noexec,relatime 0 0
efivarfs /sys/firmware/efi/efivars efivarfs rw,nosuid,nodev,noexec,relatime 0 0
bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0
systemd-1 /proc/sys/fs/binfmt_misc autofs rw,relatime,fd=30,pgrp=1,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=17639 0 0
mqueue /dev/mqueue mqueue rw,nosuid,nodev,noexec,relatime 0 0
hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0
debugfs /sys/kernel/debug debugfs rw,nosuid,nodev,noexec,relatime 0 0
tracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0
fusectl /sys/fs/fuse/connections fusectl rw,nosuid,nodev,noexec,relatime 0 0
configfs /sys/kernel/config configfs rw,nosuid,nodev,noexec,relatime 0 0
ramfs /run/credentials/systemd-sysctl.service ramfs ro,nosuid,nodev,noexec,relatime,mode=700 0 0
binfmt_misc /proc/sys/fs/binfmt_misc binfmt_misc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /run/user/1000 tmpfs rw,nosuid,nodev,relatime,size=1612200k,nr_inodes=403050,mode=700,uid=1000,gid=1000,inode64 0 0
";

const SWAPS_HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

/// A fixture machine under a temporary root.
struct Fx {
    dir: tempfile::TempDir,
    /// Kernel name -> its directory under /sys/devices.
    devices: RefCell<BTreeMap<String, String>>,
}

/// `../` enough times to climb from `dir` to the root, then `to`.
fn rel(dir: &str, to: &str) -> String {
    let depth = dir.split('/').filter(|c| !c.is_empty()).count();
    format!("{}{}", "../".repeat(depth), to.trim_start_matches('/'))
}

impl Fx {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            devices: RefCell::new(BTreeMap::new()),
        }
    }

    fn real(&self, abs: &str) -> std::path::PathBuf {
        self.dir.path().join(abs.trim_start_matches('/'))
    }

    fn file(&self, abs: &str, text: &str) -> &Self {
        let p = self.real(abs);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    fn link(&self, abs: &str, target: &str) -> &Self {
        let p = self.real(abs);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
        self
    }

    fn mounts(&self, text: &str) -> &Self {
        self.file("/proc/self/mounts", &format!("{PSEUDO_MOUNTS}{text}"))
    }

    fn swaps(&self, lines: &str) -> &Self {
        self.file("/proc/swaps", &format!("{SWAPS_HEADER}{lines}"))
    }

    /// A device directory under /sys/devices and its /sys/class/block link.
    fn device(&self, name: &str, devdir: &str, attrs: &[(&str, &str)]) -> &Self {
        for (k, v) in attrs {
            self.file(&format!("{devdir}/{k}"), &format!("{v}\n"));
        }
        std::fs::create_dir_all(self.real(devdir)).unwrap();
        self.link(
            &format!("/sys/class/block/{name}"),
            &rel("/sys/class/block", devdir),
        );
        self.devices
            .borrow_mut()
            .insert(name.to_string(), devdir.to_string());
        self
    }

    /// A whole disk on `bus` (removable=0).
    fn disk(&self, name: &str, bus: &str) -> &Self {
        self.disk_removable(name, bus, false)
    }

    fn disk_removable(&self, name: &str, bus: &str, removable: bool) -> &Self {
        let devdir = format!("/sys/devices/{bus}/block/{name}");
        let r = if removable { "1" } else { "0" };
        self.device(name, &devdir, &[("removable", r), ("ro", "0")])
    }

    /// Partition `number` of `disk`, named `name`, inside the disk's directory.
    fn part(&self, disk: &str, name: &str, number: u32) -> &Self {
        let parent = self.devices.borrow()[disk].clone();
        self.device(
            name,
            &format!("{parent}/{name}"),
            &[("partition", &number.to_string())],
        )
    }

    fn slaves(&self, devdir: &str, slaves: &[&str]) {
        std::fs::create_dir_all(self.real(&format!("{devdir}/slaves"))).unwrap();
        for s in slaves {
            let target = self.devices.borrow()[*s].clone();
            self.link(
                &format!("{devdir}/slaves/{s}"),
                &rel(&format!("{devdir}/slaves"), &target),
            );
        }
    }

    /// Device-mapper device dm-`n` named `name` with dm uuid `uuid`, and its /dev/mapper link.
    fn dm(&self, n: u32, name: &str, uuid: &str, slaves: &[&str]) -> &Self {
        let kname = format!("dm-{n}");
        let devdir = format!("/sys/devices/virtual/block/{kname}");
        self.device(
            &kname,
            &devdir,
            &[("dm/name", name), ("dm/uuid", uuid), ("removable", "0")],
        );
        self.slaves(&devdir, slaves);
        self.link(&format!("/dev/mapper/{name}"), &format!("../{kname}"))
    }

    /// md RAID device `name` at `level` over `slaves`.
    fn md(&self, name: &str, level: &str, slaves: &[&str]) -> &Self {
        let devdir = format!("/sys/devices/virtual/block/{name}");
        self.device(
            name,
            &devdir,
            &[
                ("md/level", level),
                ("md/array_state", "clean"),
                ("removable", "0"),
            ],
        );
        self.slaves(&devdir, slaves);
        self
    }

    /// Runs the collector and reads the answer as the typed contract;
    /// answers without unknowns must not name dm-N devices (the numbers
    /// change between boots, so reports would flap).
    fn collect(&self) -> Facts {
        let host = Host::fixture(self.dir.path(), vec![]);
        let v = HdEncryption
            .collect(&Context::new(&host, &NoCache))
            .unwrap();
        let text = v.to_string();
        if !text.contains("\"unknown\"") {
            assert!(!names_dm_number(&text), "dm-N in {v:#}");
        }
        serde_json::from_value(v).unwrap()
    }
}

/// True when `s` mentions a kernel dm-N name.
fn names_dm_number(s: &str) -> bool {
    s.match_indices("dm-")
        .any(|(i, _)| s[i + 3..].starts_with(|c: char| c.is_ascii_digit()))
}

const LUKS2_UUID: &str = "CRYPT-LUKS2-4c1f8e3a9d2b4f6e8a7c5b3d1e0f2a4c";
const LVM_UUID: &str = "LVM-Xq3kZ9pL2mV7nB4cR8tY6wE1uI5oP0aSdF3gH7jK2lZ9xC4vB8nM6qW1eR5tY3uI";

const YES: Known<bool> = Known::Value(true);
const NO: Known<bool> = Known::Value(false);

/// The filesystem entry at `mountpoint`.
fn fs<'a>(v: &'a Facts, mountpoint: &str) -> &'a Filesystem {
    v.filesystems
        .iter()
        .find(|f| f.mountpoint == mountpoint)
        .unwrap_or_else(|| panic!("no filesystem {mountpoint} in {v:#?}"))
}

/// The mountpoints of `filesystems`, `removable` or `exempt`.
fn mountpoints<'a>(v: &'a Facts, list: &str) -> Vec<&'a str> {
    let at = |f: &'a Filesystem| f.mountpoint.as_str();
    match list {
        "filesystems" => v.filesystems.iter().map(at).collect(),
        "removable" => v.removable.iter().map(at).collect(),
        "exempt" => v.exempt.iter().map(|e| e.mountpoint.as_str()).collect(),
        _ => panic!("no list {list}"),
    }
}

/// True when some piece of `evidence` contains `needle`.
fn says(evidence: &[String], needle: &str) -> bool {
    evidence.iter().any(|e| e.contains(needle))
}

/// Debian 12 installer, "Guided - use entire disk and set up encrypted LVM".
fn debian_encrypted_lvm() -> Fx {
    let fx = Fx::new();
    fx.disk("nvme0n1", NVME_BUS)
        .part("nvme0n1", "nvme0n1p1", 1)
        .part("nvme0n1", "nvme0n1p2", 2)
        .part("nvme0n1", "nvme0n1p3", 3)
        .dm(
            0,
            "nvme0n1p3_crypt",
            &format!("{LUKS2_UUID}-nvme0n1p3_crypt"),
            &["nvme0n1p3"],
        )
        .dm(1, "debian--vg-root", &format!("{LVM_UUID}1"), &["dm-0"])
        .dm(2, "debian--vg-swap_1", &format!("{LVM_UUID}2"), &["dm-0"])
        .link("/dev/debian-vg/root", "../dm-1")
        .mounts(
            "/dev/mapper/debian--vg-root / ext4 rw,relatime,errors=remount-ro 0 0
/dev/nvme0n1p2 /boot ext2 rw,relatime 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro 0 0
",
        )
        .swaps("/dev/dm-2                               partition\t999420\t\t0\t\t-2\n");
    fx
}

#[test]
fn debian_guided_encrypted_lvm() {
    let v = debian_encrypted_lvm().collect();
    assert!(v.encrypted, "{v:#?}");
    let root = fs(&v, "/");
    assert_eq!(root.device, "/dev/mapper/debian--vg-root");
    assert_eq!(root.encrypted, YES);
    assert_eq!(root.layers, ["lvm", "luks2", "partition", "disk"]);
    assert_eq!(
        root.evidence,
        [
            "sysfs stack: lvm debian--vg-root > luks2 nvme0n1p3_crypt > partition nvme0n1p3 > disk nvme0n1",
            "dm-crypt (luks2) on every way down to the disks",
        ]
    );
    assert!(names_dm_number("/dev/dm-2"));
    assert!(
        !root.evidence.iter().any(|e| names_dm_number(e)),
        "{root:#?}"
    );
    assert_eq!(v.filesystems.len(), 1);
    // /proc/swaps says /dev/dm-2; the report names the mapper device.
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        v.swap,
        [Swap {
            device: "/dev/mapper/debian--vg-swap_1".into(),
            kind: "partition".into(),
            encrypted: YES,
            layers: strings(&["lvm", "luks2", "partition", "disk"]),
            evidence: strings(&[
                "sysfs stack: lvm debian--vg-swap_1 > luks2 nvme0n1p3_crypt > partition nvme0n1p3 > disk nvme0n1",
                "dm-crypt (luks2) on every way down to the disks",
            ]),
        }]
    );
    assert_eq!(mountpoints(&v, "exempt"), ["/boot", "/boot/efi"]);
    assert!(v.exempt[1].reason.contains("firmware"));
    assert!(v.remote.is_empty());
    assert!(v.notes.is_empty());
    assert!(v.removable.is_empty());
    assert_eq!(
        v.evidence,
        [
            "judged from /proc/self/mounts, /proc/swaps and /sys/class/block: all encrypted (or in RAM)"
        ]
    );
}

#[test]
fn debian_root_through_vg_lv_path_and_by_uuid() {
    // Older fstabs and initramfs scripts mount /dev/VG/LV or a by-uuid link.
    let fx = debian_encrypted_lvm();
    fx.link(
        "/dev/disk/by-uuid/0b7c1f3e-55d2-4a8e-9c61-2f4de8a7b901",
        "../../dm-1",
    )
    .file(
        "/proc/self/mounts",
        "/dev/debian-vg/root / ext4 rw 0 0\n/dev/disk/by-uuid/0b7c1f3e-55d2-4a8e-9c61-2f4de8a7b901 /srv ext4 rw 0 0\n",
    );
    let v = fx.collect();
    assert_eq!(v.filesystems.len(), 1, "{v:#?}");
    assert_eq!(fs(&v, "/").device, "/dev/mapper/debian--vg-root");
    assert_eq!(fs(&v, "/").encrypted, YES);
}

#[test]
fn fedora_luks2_btrfs_subvolumes_and_zram() {
    let fx = Fx::new();
    let luks = "luks-3f6d2a1c-8b4e-4f0a-9d7c-5e2b1a0c9f8d";
    fx.disk("nvme0n1", NVME_BUS)
        .part("nvme0n1", "nvme0n1p1", 1)
        .part("nvme0n1", "nvme0n1p2", 2)
        .part("nvme0n1", "nvme0n1p3", 3)
        .dm(
            0,
            luks,
            &format!("CRYPT-LUKS2-3f6d2a1c8b4e4f0a9d7c5e2b1a0c9f8d-{luks}"),
            &["nvme0n1p3"],
        )
        .device(
            "zram0",
            "/sys/devices/virtual/block/zram0",
            &[("comp_algorithm", "lzo-rle [zstd]"), ("backing_dev", "none")],
        )
        .link(
            "/sys/fs/btrfs/7a9e4c2b-1d3f-4e5a-8b6c-9d0e1f2a3b4c/devices/dm-0",
            "../../../../devices/virtual/block/dm-0",
        )
        .mounts(&format!(
            "/dev/mapper/{luks} / btrfs rw,relatime,seclabel,compress=zstd:1,ssd,discard=async,space_cache=v2,subvolid=257,subvol=/root 0 0
tmpfs /tmp tmpfs rw,seclabel,nosuid,nodev,size=8092572k,nr_inodes=1048576,inode64 0 0
/dev/nvme0n1p2 /boot ext4 rw,relatime,seclabel 0 0
/dev/mapper/{luks} /home btrfs rw,relatime,seclabel,compress=zstd:1,ssd,discard=async,space_cache=v2,subvolid=256,subvol=/home 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=winnt,errors=remount-ro 0 0
"
        ))
        .swaps("/dev/zram0                              partition\t8388604\t\t0\t\t100\n");
    let v = fx.collect();
    assert!(v.encrypted, "{v:#?}");
    assert_eq!(
        mountpoints(&v, "filesystems"),
        ["/"],
        "subvolumes counted once"
    );
    let root = fs(&v, "/");
    assert_eq!(root.device, format!("/dev/mapper/{luks}"));
    assert_eq!(root.fstype, "btrfs");
    assert_eq!(root.layers, ["luks2", "partition", "disk"]);
    assert_eq!(v.swap[0].device, "/dev/zram0");
    assert_eq!(v.swap[0].encrypted, YES);
    assert_eq!(v.swap[0].layers, ["zram"]);
    assert!(says(&v.swap[0].evidence, "memory only"), "{v:#?}");
}

#[test]
fn zram_with_plain_writeback_device_is_not_encrypted() {
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .part("sda", "sda3", 3)
        .device(
            "zram0",
            "/sys/devices/virtual/block/zram0",
            &[("backing_dev", "/dev/sda3")],
        )
        .mounts("/dev/sda1 / ext4 rw 0 0\n")
        .swaps("/dev/zram0 partition 4194300 0 100\n");
    let v = fx.collect();
    assert_eq!(v.swap[0].encrypted, NO, "{v:#?}");
    assert_eq!(v.swap[0].layers, ["zram", "partition", "disk"]);
}

#[test]
fn luks1_inside_lvm_and_plain_dmcrypt_swap() {
    // vg0 on sda2 with LVs root, home and swap; LUKS1 inside root and home,
    // swap opened by crypttab with a random key (plain dm-crypt).
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .part("sda", "sda2", 2)
        .dm(0, "vg0-root", &format!("{LVM_UUID}a"), &["sda2"])
        .dm(1, "vg0-home", &format!("{LVM_UUID}b"), &["sda2"])
        .dm(2, "vg0-swap", &format!("{LVM_UUID}c"), &["sda2"])
        .dm(
            3,
            "root_crypt",
            "CRYPT-LUKS1-9e1d2c3b4a5f46e7890a1b2c3d4e5f60-root_crypt",
            &["dm-0"],
        )
        .dm(
            4,
            "home_crypt",
            "CRYPT-LUKS1-0f1e2d3c4b5a46978877665544332211-home_crypt",
            &["dm-1"],
        )
        .dm(5, "cryptswap", "CRYPT-PLAIN-cryptswap", &["dm-2"])
        .mounts(
            "/dev/mapper/root_crypt / ext4 rw,relatime,errors=remount-ro 0 0
/dev/sda1 /boot ext4 rw,relatime 0 0
/dev/mapper/home_crypt /home ext4 rw,relatime 0 0
",
        )
        .swaps("/dev/dm-5 partition 2097148 0 -2\n");
    let v = fx.collect();
    assert!(v.encrypted, "{v:#?}");
    assert_eq!(fs(&v, "/").layers, ["luks1", "lvm", "partition", "disk"]);
    assert_eq!(fs(&v, "/home").encrypted, YES);
    assert_eq!(v.swap[0].device, "/dev/mapper/cryptswap");
    assert_eq!(
        v.swap[0].layers,
        ["dm-crypt-plain", "lvm", "partition", "disk"]
    );
    assert_eq!(mountpoints(&v, "exempt"), ["/boot"]);
}

/// Two disks, one volume group "data" over sda2 (LUKS) and sdb1 (LUKS or plain).
fn two_disk_vg(second_encrypted: bool) -> Fx {
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .part("sda", "sda2", 2)
        .disk("sdb", SATA_B)
        .part("sdb", "sdb1", 1)
        .dm(
            0,
            "sda2_crypt",
            &format!("{LUKS2_UUID}-sda2_crypt"),
            &["sda2"],
        );
    if second_encrypted {
        fx.dm(
            1,
            "sdb1_crypt",
            "CRYPT-LUKS2-aa55aa55bb66bb66cc77cc77dd88dd88-sdb1_crypt",
            &["sdb1"],
        )
        .dm(2, "data-srv", &format!("{LVM_UUID}s"), &["dm-0", "dm-1"]);
    } else {
        fx.dm(2, "data-srv", &format!("{LVM_UUID}s"), &["dm-0", "sdb1"]);
    }
    fx.mounts("/dev/sda1 /boot/efi vfat rw 0 0\n/dev/mapper/data-srv / xfs rw,relatime,attr2,inode64 0 0\n")
        .swaps("");
    fx
}

#[test]
fn volume_group_over_two_luks_pvs() {
    let v = two_disk_vg(true).collect();
    assert!(v.encrypted, "{v:#?}");
    let root = fs(&v, "/");
    assert_eq!(root.layers, ["lvm", "luks2", "partition", "disk"]);
    assert!(
        says(&root.evidence, "disk sda") && says(&root.evidence, "disk sdb"),
        "{root:#?}"
    );
}

#[test]
fn volume_group_with_one_plain_pv_is_not_encrypted() {
    let v = two_disk_vg(false).collect();
    assert!(!v.encrypted, "{v:#?}");
    let root = fs(&v, "/");
    assert_eq!(root.encrypted, NO);
    let conclusion = root.evidence.last().unwrap();
    assert_eq!(
        conclusion, "no dm-crypt layer on lvm data-srv > partition sdb1 > disk sdb",
        "the encrypted PV is not blamed: {root:#?}"
    );
    assert!(says(&v.evidence, "not encrypted: /"), "{v:#?}");
}

#[test]
fn btrfs_over_several_devices() {
    let build = |second: &str| {
        let fx = Fx::new();
        fx.disk("nvme0n1", NVME_BUS)
            .part("nvme0n1", "nvme0n1p2", 2)
            .disk("sda", SATA_A)
            .dm(0, "cr_a", &format!("{LUKS2_UUID}-cr_a"), &["nvme0n1p2"])
            .dm(1, "cr_b", "CRYPT-LUKS2-11112222333344445555666677778888-cr_b", &["sda"])
            .link("/sys/fs/btrfs/5e0c/devices/dm-0", "../../../../devices/virtual/block/dm-0")
            .link(
                &format!("/sys/fs/btrfs/5e0c/devices/{second}"),
                "../../../../devices/virtual/block/x",
            )
            .mounts("/dev/mapper/cr_a / btrfs rw,subvol=/@ 0 0\n/dev/mapper/cr_a /home btrfs rw,subvol=/@home 0 0\n")
            .swaps("");
        fx
    };
    let v = build("dm-1").collect();
    assert!(v.encrypted, "{v:#?}");
    let ev = &fs(&v, "/").evidence;
    assert!(ev[0].contains("btrfs 5e0c spans cr_a, cr_b"), "{ev:?}");
    // RAID1 profile with the second device plain: not encrypted.
    let v = build("sda").collect();
    assert_eq!(fs(&v, "/").encrypted, NO, "{v:#?}");
    assert_eq!(mountpoints(&v, "filesystems"), ["/"]);
}

#[test]
fn boot_subvolume_of_a_plain_root_is_judged_not_exempt() {
    // openSUSE-style btrfs: /boot/grub2 is a subvolume of the root filesystem.
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .part("sda", "sda2", 2)
        .mounts(
            "/dev/sda2 / btrfs rw,relatime,subvol=/@/.snapshots/1/snapshot 0 0
/dev/sda2 /boot/grub2/x86_64-efi btrfs rw,relatime,subvol=/@/boot/grub2/x86_64-efi 0 0
/dev/sda2 /home btrfs rw,relatime,subvol=/@/home 0 0
/dev/sda1 /boot/efi vfat rw 0 0
",
        )
        .swaps("");
    let v = fx.collect();
    assert!(!v.encrypted, "{v:#?}");
    assert_eq!(mountpoints(&v, "filesystems"), ["/"]);
    assert_eq!(mountpoints(&v, "exempt"), ["/boot/efi"]);
}

#[test]
fn md_raid1_over_luks_members() {
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .part("sda", "sda2", 2)
        .disk("sdb", SATA_B)
        .part("sdb", "sdb2", 2)
        .dm(0, "md_a", &format!("{LUKS2_UUID}-md_a"), &["sda2"])
        .dm(
            1,
            "md_b",
            "CRYPT-LUKS2-99998888777766665555444433332222-md_b",
            &["sdb2"],
        )
        .md("md0", "raid1", &["dm-0", "dm-1"])
        .mounts("/dev/md0 / ext4 rw,relatime 0 0\n/dev/sda1 /boot/efi vfat rw 0 0\n")
        .swaps("");
    let v = fx.collect();
    assert!(v.encrypted, "{v:#?}");
    assert_eq!(
        fs(&v, "/").layers,
        ["md-raid1", "luks2", "partition", "disk"]
    );
    assert_eq!(fs(&v, "/").device, "/dev/md0");
}

#[test]
fn luks_over_md_raid1_and_a_half_encrypted_mirror() {
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .disk("sdb", SATA_B)
        .part("sdb", "sdb1", 1)
        .md("md0", "raid1", &["sda1", "sdb1"])
        .dm(0, "cryptroot", &format!("{LUKS2_UUID}-cryptroot"), &["md0"])
        .mounts("/dev/mapper/cryptroot / ext4 rw 0 0\n")
        .swaps("");
    let v = fx.collect();
    assert!(v.encrypted, "{v:#?}");
    assert_eq!(
        fs(&v, "/").layers,
        ["luks2", "md-raid1", "partition", "disk"]
    );

    // A mirror of one LUKS member and one plain partition leaks the data.
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .disk("sdb", SATA_B)
        .part("sdb", "sdb1", 1)
        .dm(0, "m_a", &format!("{LUKS2_UUID}-m_a"), &["sda1"])
        .md("md127", "raid1", &["dm-0", "sdb1"])
        .mounts("/dev/md127 /srv ext4 rw 0 0\n")
        .swaps("");
    let v = fx.collect();
    assert_eq!(fs(&v, "/srv").encrypted, NO, "{v:#?}");
}

#[test]
fn unencrypted_laptop() {
    let fx = Fx::new();
    fx.disk("nvme0n1", NVME_BUS)
        .part("nvme0n1", "nvme0n1p1", 1)
        .part("nvme0n1", "nvme0n1p2", 2)
        .part("nvme0n1", "nvme0n1p3", 3)
        .mounts(
            "/dev/nvme0n1p2 / ext4 rw,relatime,errors=remount-ro 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077 0 0
",
        )
        .swaps("/dev/nvme0n1p3                          partition\t16777212\t0\t\t-2\n");
    let v = fx.collect();
    assert!(!v.encrypted, "{v:#?}");
    let root = fs(&v, "/");
    assert_eq!(root.encrypted, NO);
    assert_eq!(root.layers, ["partition", "disk"]);
    assert_eq!(
        root.evidence,
        [
            "sysfs stack: partition nvme0n1p2 > disk nvme0n1",
            "no dm-crypt layer between the filesystem and the disk",
        ]
    );
    assert_eq!(v.swap[0].device, "/dev/nvme0n1p3");
    assert_eq!(v.swap[0].encrypted, NO);
    assert_eq!(
        v.evidence,
        [
            "judged from /proc/self/mounts, /proc/swaps and /sys/class/block: not encrypted: /, swap /dev/nvme0n1p3"
        ]
    );
}

#[test]
fn nfs_home_usb_stick_snaps_docker_and_loop_images() {
    let fx = Fx::new();
    fx.disk("nvme0n1", NVME_BUS)
        .part("nvme0n1", "nvme0n1p1", 1)
        .part("nvme0n1", "nvme0n1p3", 3)
        .dm(0, "nvme0n1p3_crypt", &format!("{LUKS2_UUID}-nvme0n1p3_crypt"), &["nvme0n1p3"])
        .disk_removable("sdb", USB_STICK, true)
        .part("sdb", "sdb1", 1)
        .device(
            "loop0",
            "/sys/devices/virtual/block/loop0",
            &[("loop/backing_file", "/var/lib/snapd/snaps/core22_1380.snap")],
        )
        .device(
            "loop1",
            "/sys/devices/virtual/block/loop1",
            &[("loop/backing_file", "/var/lib/images/build.img")],
        )
        .mounts(
            "/dev/mapper/nvme0n1p3_crypt / ext4 rw,relatime 0 0
/dev/nvme0n1p1 /boot/efi vfat rw 0 0
/dev/loop0 /snap/core22/1380 squashfs ro,nodev,relatime,errors=continue,threads=single 0 0
fileserver.example.org:/export/home /home nfs4 rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=192.0.2.10,local_lock=none,addr=192.0.2.5 0 0
alice@build:/srv /home/alice/build fuse.sshfs rw,nosuid,nodev,relatime,user_id=1000,group_id=1000 0 0
//nas/share /mnt/nas cifs rw,relatime,vers=3.1.1,cache=strict,username=alice 0 0
overlay /var/lib/docker/overlay2/4f1e/merged overlay rw,relatime,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/4f1e/diff,workdir=/var/lib/docker/overlay2/4f1e/work 0 0
/dev/loop1 /mnt/build ext4 rw,relatime 0 0
/dev/sdb1 /media/alice/USB\\040STICK vfat rw,nosuid,nodev,relatime,uid=1000,gid=1000,fmask=0022,dmask=0022,showexec,utf8,flush,errors=remount-ro,uhelper=udisks2 0 0
/home/alice/.Private /home/alice ecryptfs rw,relatime,ecryptfs_fnek_sig=0123456789abcdef,ecryptfs_sig=0123456789abcdef,ecryptfs_cipher=aes,ecryptfs_key_bytes=16,ecryptfs_unlink_sigs 0 0
",
        )
        .swaps("/swapfile                               file\t\t2097148\t\t0\t\t-2\n");
    let v = fx.collect();
    assert!(v.encrypted, "{v:#?}");
    assert_eq!(
        mountpoints(&v, "filesystems"),
        ["/", "/home/alice", "/mnt/build"]
    );
    assert_eq!(fs(&v, "/home/alice").layers, ["ecryptfs"]);
    assert_eq!(fs(&v, "/mnt/build").device, "/var/lib/images/build.img");
    assert_eq!(
        fs(&v, "/mnt/build").layers,
        ["loop", "luks2", "partition", "disk"]
    );
    let mount = |mountpoint: &str, device: &str, fstype: &str| Mount {
        mountpoint: mountpoint.into(),
        device: device.into(),
        fstype: fstype.into(),
    };
    assert_eq!(
        v.remote,
        [
            mount("/home", "fileserver.example.org:/export/home", "nfs4"),
            mount("/home/alice/build", "alice@build:/srv", "fuse.sshfs"),
            mount("/mnt/nas", "//nas/share", "cifs"),
        ]
    );
    // The plain USB stick is reported, but does not make the machine fail.
    assert_eq!(mountpoints(&v, "removable"), ["/media/alice/USB STICK"]);
    assert_eq!(v.removable[0].encrypted, NO);
    assert_eq!(
        v.evidence[1],
        "removable media listed apart and not counted: /media/alice/USB STICK"
    );
    let swap = &v.swap[0];
    assert_eq!(swap.device, "/swapfile");
    assert_eq!(swap.kind, "file");
    assert_eq!(swap.encrypted, YES);
    assert_eq!(swap.layers, ["file", "luks2", "partition", "disk"]);
    assert_eq!(
        swap.evidence[0], "swap file on the filesystem mounted at /",
        "the context leads: {swap:#?}"
    );
}

#[test]
fn systemd_homed_luks_image_on_a_plain_disk() {
    // homed: /home/alice.home is a LUKS2 image on loop0, on a plain /home.
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .part("sda", "sda2", 2)
        .device(
            "loop0",
            "/sys/devices/virtual/block/loop0",
            &[("loop/backing_file", "/home/alice.home")],
        )
        .dm(
            0,
            "home-alice",
            "CRYPT-LUKS2-5d4c3b2a19084f7e8d6c5b4a39281706-home-alice",
            &["loop0"],
        )
        .mounts(
            "/dev/sda1 / ext4 rw 0 0
/dev/sda2 /home ext4 rw 0 0
/dev/mapper/home-alice /home/alice ext4 rw,nosuid,nodev 0 0
",
        )
        .swaps("");
    let v = fx.collect();
    let home = fs(&v, "/home/alice");
    assert_eq!(home.encrypted, YES, "{v:#?}");
    assert_eq!(home.layers, ["luks2", "loop", "partition", "disk"]);
    assert!(says(
        &home.evidence,
        "luks2 home-alice > loop /home/alice.home > partition sda2 > disk sda"
    ));
    assert_eq!(fs(&v, "/home").encrypted, NO);
}

#[test]
fn usb_disk_that_claims_not_removable_is_still_removable() {
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        .disk("sdc", USB_STICK)
        .dm(0, "backup", &format!("{LUKS2_UUID}-backup"), &["sdc"])
        .mounts("/dev/sda1 / ext4 rw 0 0\n/dev/mapper/backup /run/media/alice/backup ext4 rw 0 0\n")
        .swaps("");
    let v = fx.collect();
    assert_eq!(mountpoints(&v, "removable"), ["/run/media/alice/backup"]);
    assert_eq!(v.removable[0].encrypted, YES);
    assert!(!v.encrypted, "the internal disk is plain: {v:#?}");
}

#[test]
fn raspberry_pi_dev_root_resolved_through_mountinfo() {
    let fx = Fx::new();
    fx.disk("mmcblk0", "platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa")
        .part("mmcblk0", "mmcblk0p1", 1)
        .part("mmcblk0", "mmcblk0p2", 2)
        .file(
            "/proc/self/mountinfo",
            "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n\
             31 22 179:1 / /boot/firmware rw,relatime shared:14 - vfat /dev/mmcblk0p1 rw,fmask=0022\n",
        )
        .link(
            "/sys/dev/block/179:2",
            "../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p2",
        )
        .mounts("/dev/root / ext4 rw,noatime 0 0\n/dev/mmcblk0p1 /boot/firmware vfat rw,relatime 0 0\n")
        .swaps("");
    let v = fx.collect();
    let root = fs(&v, "/");
    assert_eq!(root.device, "/dev/mmcblk0p2", "{v:#?}");
    assert_eq!(root.encrypted, NO);
    assert_eq!(root.layers, ["partition", "disk"]);
    assert_eq!(mountpoints(&v, "exempt"), ["/boot/firmware"]);
}

#[test]
fn garbage_answers_with_reasons() {
    let fx = Fx::new();
    fx.disk("sda", SATA_A)
        .part("sda", "sda1", 1)
        // dm/uuid unreadable (a directory stands in for EACCES/EIO).
        .dm(0, "weird", "", &["sda1"]);
    std::fs::remove_file(fx.real("/sys/devices/virtual/block/dm-0/dm/uuid")).unwrap();
    std::fs::create_dir_all(fx.real("/sys/devices/virtual/block/dm-0/dm/uuid")).unwrap();
    // A dm device without uuid, two that name each other as slaves, and
    // one whose slave has vanished from sysfs.
    fx.dm(1, "nouuid", "", &["sda1"])
        .dm(2, "loop_a", &format!("{LVM_UUID}x"), &[])
        .dm(3, "loop_b", &format!("{LVM_UUID}y"), &["dm-2"])
        .dm(4, "orphan", &format!("{LVM_UUID}z"), &[])
        .link("/sys/devices/virtual/block/dm-2/slaves/dm-3", "../../dm-3")
        .link("/sys/devices/virtual/block/dm-4/slaves/dm-9", "../../dm-9")
        .file(
            "/proc/self/mounts",
            "/dev/mapper/weird /a ext4 rw 0 0\n\
             garbage\n\
             /dev/mapper/nouuid /b ext4 rw 0 0\n\
             /dev/mapper/loop_b /c ext4 rw 0 0\n\
             /dev/mapper/orphan /d ext4 rw 0 0\n\
             /dev/mapper/gone /e ext4 rw 0 0\n\
             /dev/bogus0 /f xfs rw 0 0\n\
             tank/home /g zfs rw,xattr,noacl 0 0\n\
             a b\n\
             /dev/sdz1 /h ext4 rw 0 0\n\
             \u{0}\u{1}\u{2} /\u{ff} \u{7f} \\777\n",
        )
        .file(
            "/proc/swaps",
            "Filename Type\nnot-a-path partition\n/dev/nope partition 1 0 -2\n",
        );
    let v = fx.collect();
    assert!(!v.encrypted, "{v:#?}");
    let unknown = |mp: &str| {
        let f = fs(&v, mp);
        assert_eq!(f.encrypted, Known::UNKNOWN, "{mp}: {f:#?}");
        f.evidence.join("\n")
    };
    assert!(unknown("/a").contains("unreadable"));
    assert!(unknown("/b").contains("dmsetup table"));
    assert!(unknown("/c").contains("sysfs shows loop_b below itself"));
    assert!(unknown("/d").contains("/sys/class/block/dm-9 does not exist"));
    assert!(unknown("/e").contains("no device-mapper device is named gone"));
    assert!(unknown("/f").contains("no /sys/class/block entry"));
    assert!(unknown("/g").contains("zfs get encryption"));
    // A disk name sysfs does not know is still known not to be dm-crypt.
    assert_eq!(fs(&v, "/h").encrypted, NO);
    let notes = v.notes.join("\n");
    assert!(
        notes.contains("/proc/self/mounts line 2 ignored"),
        "{notes}"
    );
    assert!(notes.contains("/proc/swaps line 2 ignored"), "{notes}");
    assert_eq!(v.swap[0].device, "/dev/nope");
    assert_eq!(v.swap[0].encrypted, Known::UNKNOWN);
    let summary = &v.evidence[0];
    assert!(summary.contains("cannot tell: /a, /b, /c"), "{summary}");
}

#[test]
fn container_with_overlay_root() {
    // Docker: / is an overlay whose upper directory lives on the host; the
    // host's disk shows through the bind-mounted /etc/hosts.
    let fx = Fx::new();
    fx.disk("vda", "pci0000:00/0000:00:04.0/virtio2")
        .part("vda", "vda1", 1)
        .file("/.dockerenv", "")
        .file(
            "/proc/self/mounts",
            "overlay / overlay rw,relatime,lowerdir=/var/lib/docker/overlay2/l/Q2X:/var/lib/docker/overlay2/l/7TB,upperdir=/var/lib/docker/overlay2/9c1d/diff,workdir=/var/lib/docker/overlay2/9c1d/work 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev tmpfs rw,nosuid,size=65536k,mode=755,inode64 0 0
shm /dev/shm tmpfs rw,nosuid,nodev,noexec,relatime,size=65536k,inode64 0 0
/dev/vda1 /etc/hosts ext4 rw,relatime,discard 0 0
/dev/vda1 /etc/hostname ext4 rw,relatime,discard 0 0
",
        );
    let v = fx.collect();
    let root = fs(&v, "/");
    assert_eq!(root.encrypted, Known::UNKNOWN, "{v:#?}");
    assert!(says(&root.evidence, "/.dockerenv exists"), "{root:#?}");
    assert_eq!(fs(&v, "/etc/hostname").encrypted, NO);
    assert_eq!(mountpoints(&v, "filesystems"), ["/", "/etc/hostname"]);
    assert!(says(&v.notes, "/proc/swaps does not exist"), "{v:#?}");
}

#[test]
fn dm_uuid_classes() {
    use stack::{Effect, classify_dm};
    assert_eq!(classify_dm("CRYPT-LUKS2-abc-x").0, "luks2");
    assert_eq!(classify_dm("CRYPT-LUKS2-OPAL-abc-x").0, "luks2-opal");
    assert_eq!(classify_dm("CRYPT-BITLK-abc-x").1, Effect::Encrypts);
    assert_eq!(classify_dm("CRYPT-VERITY-abc-x").1, Effect::Passes);
    assert_eq!(classify_dm("CRYPT-SUBDEV-abc-x_dif").0, "dm-integrity");
    assert!(matches!(
        classify_dm("CRYPT-NEWTHING-x").1,
        Effect::Unclear(_)
    ));
    assert_eq!(classify_dm("mpath-3600508b1001c").0, "multipath");
    assert_eq!(classify_dm("part1-mpath-3600508b1001c").0, "partition");
    assert!(matches!(classify_dm("").1, Effect::Unclear(_)));
}

#[test]
fn live_machine_answers() {
    let v = HdEncryption
        .collect(&Context::new(&Host::system(), &NoCache))
        .unwrap();
    assert!(v["encrypted"].is_boolean(), "{v:#}");
    assert!(v["evidence"].is_array(), "{v:#}");
    let typed: Facts = serde_json::from_value(v).unwrap();
    assert!(!typed.evidence.is_empty());
}

//! The seam between collectors and the machine. Collectors read files
//! through a root path, so a fixture tree can stand in for /etc, /proc and
//! /sys, run programs through a runner that fixtures replace with captured
//! output, read D-Bus properties through a bus that fixtures replace with a
//! JSON file, and ask for network interfaces through a replaceable source.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod bus;
mod commands;

pub use bus::{Bus, BusError, FixtureBus};
pub use commands::{
    COMMAND_TIMEOUT, CommandOutput, CommandRunner, FixtureRunner, programs_spawned,
};

/// One address on one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// True for the loopback interface.
    pub loopback: bool,
}

type InterfaceSource = Arc<dyn Fn() -> io::Result<Vec<InterfaceAddress>> + Send + Sync>;

/// The machine (or a fixture of one) collectors look at.
#[derive(Clone)]
pub struct Host {
    root: PathBuf,
    interfaces: InterfaceSource,
    commands: Arc<dyn CommandRunner>,
    bus: Arc<dyn Bus>,
    live: bool,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("root", &self.root)
            .field("live", &self.live)
            .finish()
    }
}

impl Host {
    /// The running system.
    pub fn system() -> Self {
        Self {
            root: PathBuf::from("/"),
            interfaces: Arc::new(system_interfaces),
            commands: Arc::new(commands::SystemRunner),
            bus: Arc::new(bus::SystemBus::default()),
            live: true,
        }
    }

    /// A fixture tree with a fixed interface list. Programs answer with
    /// the output captured under `<root>/.commands/` (see [`FixtureRunner`])
    /// and D-Bus with `<root>/.dbus.json` (see [`FixtureBus`]).
    pub fn fixture(root: impl Into<PathBuf>, interfaces: Vec<InterfaceAddress>) -> Self {
        let root = root.into();
        Self {
            commands: Arc::new(FixtureRunner::new(root.join(".commands"))),
            bus: Arc::new(FixtureBus::load(&root.join(".dbus.json"))),
            root,
            interfaces: Arc::new(move || Ok(interfaces.clone())),
            live: false,
        }
    }

    /// Runs a program of the machine (captured output for fixtures).
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
        self.commands.run(program, args)
    }

    /// The system D-Bus (a recorded one for fixtures).
    pub fn bus(&self) -> &dyn Bus {
        self.bus.as_ref()
    }

    /// Finds an executable in the usual system directories of the machine.
    pub fn find_program(&self, name: &str) -> Option<String> {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| format!("{d}/{name}"))
            .find(|p| {
                std::fs::metadata(self.path(p))
                    .map(|m| {
                        m.is_file()
                            && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111
                                != 0
                    })
                    .unwrap_or(false)
            })
    }

    /// Lists a directory of the machine: file names, sorted; empty when absent.
    pub fn list_dir(&self, absolute: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(absolute))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The target of a symbolic link of the machine.
    pub fn read_link(&self, absolute: &str) -> io::Result<PathBuf> {
        std::fs::read_link(self.path(absolute))
    }

    /// True when this is the running system, not a fixture.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Maps an absolute path on the machine into the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// Reads a file of the machine.
    pub fn read_to_string(&self, absolute: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(absolute))
    }

    /// True when the file exists on the machine.
    pub fn exists(&self, absolute: &str) -> bool {
        self.path(absolute).exists()
    }

    /// The root path (for collectors that walk directories).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Addresses of every interface.
    pub fn interfaces(&self) -> io::Result<Vec<InterfaceAddress>> {
        (self.interfaces)()
    }

    /// The machine's hardware architecture, as `uname -m` prints it.
    pub fn machine(&self) -> io::Result<String> {
        if self.live {
            Ok(nix::sys::utsname::uname()
                .map_err(io::Error::from)?
                .machine()
                .to_string_lossy()
                .into_owned())
        } else {
            Ok(self
                .read_to_string("/proc/sys/kernel/arch")?
                .trim()
                .to_string())
        }
    }
}

fn system_interfaces() -> io::Result<Vec<InterfaceAddress>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let prefix = |mask: Option<IpAddr>| match mask {
            Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
            Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
            None => 0,
        };
        let loopback = ifa
            .flags
            .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK);
        let (address, mask) = if let Some(v4) = addr.as_sockaddr_in() {
            (
                IpAddr::V4(v4.ip()),
                ifa.netmask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in())
                    .map(|m| IpAddr::V4(m.ip())),
            )
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            (
                IpAddr::V6(v6.ip()),
                ifa.netmask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in6())
                    .map(|m| IpAddr::V6(m.ip())),
            )
        } else {
            continue;
        };
        out.push(InterfaceAddress {
            interface: ifa.interface_name,
            address,
            prefix: prefix(mask),
            loopback,
        });
    }
    Ok(out)
}

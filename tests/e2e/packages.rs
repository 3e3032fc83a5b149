//! Packages, units and signed repositories against the real tools:
//! systemd-analyze, apt, dnf and pacman, each verifying what
//! `pdome-admin release` published and the server serves over HTTPS.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use penguindome_agent::repo_access;
use penguindome_agent::session::Session;
use penguindome_agent::transport::Transport;
use penguindome_protocol::wire::RepoCredential;
use penguindome_protocol::{PublicKey, SecretKey};
use penguindome_tests::{Server, SimClient, Site, bin, http, stand_in, text};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?} cannot start ({e}); scripts/test installs the packaging tools")
    })
}

fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A site with a published release, its server running.
struct Published {
    site: Site,
    _server: Server,
    /// The pinned certificate, as a file.
    ca: PathBuf,
    /// The server's public key, armored, as a file.
    key: PathBuf,
    /// https://127.0.0.1:PORT/penguindome/v1/repo
    repo_url: String,
    /// The same over a plain HTTP listener, when asked for.
    plain_repo_url: Option<String>,
    /// The password of the agents' repository user, which init made.
    password: String,
    /// A client's own repository credential, as the server issued it.
    client: RepoCredential,
}

/// Enrolls a simulated client and asks for its own repository credential.
fn client_credential(site: &Site) -> RepoCredential {
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let sim = SimClient::enroll(&config, &transport, "repo-client").unwrap();
    Session::new(&config, &transport, &sim.key, sim.id.clone())
        .unwrap()
        .repo_credential("repo-client")
        .unwrap()
}

impl Published {
    fn new() -> Self {
        Self::with_listeners(false)
    }

    /// pacman 6.0 with an XferCommand (the only way to hand it a pinned
    /// certificate in a test) never fetches database signatures; clients
    /// trust the site certificate system-wide instead, which a test cannot
    /// do, so pacman gets a plain listener. Signatures are what it checks.
    fn with_plain_listener() -> Self {
        Self::with_listeners(true)
    }

    fn with_listeners(plain: bool) -> Self {
        Self::with_setup(plain, |_| {})
    }

    /// Like [`Published::with_listeners`], with `setup` run on the site
    /// before the first release.
    fn with_setup(plain: bool, setup: impl FnOnce(&Site)) -> Self {
        let site = Site::init();
        setup(&site);
        let plain_repo_url = plain.then(|| {
            let port = penguindome_tests::free_port();
            let mut toml = std::fs::read_to_string(site.config_dir.join("server.toml")).unwrap();
            toml.push_str(&format!(
                "\n[[listener]]\nname = \"plain\"\naddress = \"127.0.0.1:{port}\"\n"
            ));
            std::fs::write(site.config_dir.join("server.toml"), toml).unwrap();
            format!("http://127.0.0.1:{port}/penguindome/v1/repo")
        });
        let out = release(&site, &[]);
        assert!(out.contains("Published release 1"), "{out}");
        let server = site.start();
        let config = site.agent_config();
        let ca = site.ca_file();
        let key = site.dir.path().join("key.asc");
        write(&key, &config.server_public_key);
        let repo_url = format!("{}/penguindome/v1/repo", site.url);
        let password = std::fs::read_to_string(site.config_dir.join("repo-password")).unwrap();
        let client = client_credential(&site);
        Self {
            client,
            password: password.trim().to_string(),
            site,
            _server: server,
            ca,
            key,
            repo_url,
            plain_repo_url,
        }
    }

    /// A file of the current release.
    fn current(&self, rel: &str) -> PathBuf {
        self.site.data_dir.join("repo/current").join(rel)
    }
}

/// A script stands in for the agent (see [`stand_in`]).
fn release(site: &Site, extra: &[&str]) -> String {
    let agent = stand_in(site.dir.path(), "penguindome-agent");
    let agent = agent.display().to_string();
    let mut args = vec!["release", "--agent-binary", &agent];
    args.extend_from_slice(extra);
    let out = site.admin(&args);
    assert!(
        out.status.success(),
        "pdome-admin release failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Changes a file's last byte in place (same size), returning the original.
fn flip_last_byte(path: &Path) -> Vec<u8> {
    let good = std::fs::read(path).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(path, &bad).unwrap();
    good
}

/// Re-signs a file with a key the clients do not trust.
fn sign_with_stranger(data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let stranger = SecretKey::generate("Stranger <stranger@example.invalid>").unwrap();
    (
        stranger.sign_cleartext(data).unwrap(),
        stranger.sign_armored(data).unwrap(),
    )
}

#[test]
fn units_verify_cleanly_and_the_server_is_hardened() {
    let stage = tempfile::tempdir().unwrap();
    let units = stage.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for e in std::fs::read_dir("/usr/lib/systemd/system")
        .unwrap()
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(".target") {
            std::fs::copy(e.path(), units.join(e.file_name())).unwrap();
        }
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(workspace().join("systemd"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".service") || name.ends_with(".timer") {
            std::fs::copy(e.path(), units.join(&name)).unwrap();
            names.push(name);
        }
    }
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    // kill(1) too: the server's ExecReload sends SIGHUP with it.
    for b in [
        "penguindome-agent",
        "penguindome-server",
        "pdome-admin",
        "kill",
    ] {
        let p = stage.path().join("usr/bin").join(b);
        write(&p, "#!/bin/sh\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", stage.path().display()))
            .args(&names),
    );
    // Unknown keys and bad values are only warnings with status 0.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify printed something: {}",
        text(&out)
    );

    assert!(
        names.contains(&"penguindome-audit.timer".to_string())
            && names.contains(&"penguindome-audit.service".to_string()),
        "{names:?}"
    );
    // The server and the audit (both run as the penguindome user).
    for unit in ["penguindome-server.service", "penguindome-audit.service"] {
        let out = output(
            Command::new("systemd-analyze")
                .args(["security", "--offline=yes"])
                .arg(format!("--root={}", stage.path().display()))
                .arg(unit),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = stdout
            .lines()
            .find_map(|l| l.split(&format!("{unit}: ")).nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in: {}", text(&out)));
        assert!(
            exposure <= 2.0,
            "{unit} exposure {exposure} > 2.0:\n{stdout}"
        );
    }

    // The packages carry the very same units.
    let agent_unit = std::fs::read_to_string(units.join("penguindome-agent.service")).unwrap();
    assert!(agent_unit.contains("ProtectHome=read-only") && agent_unit.contains("MemoryMax="));
}

#[test]
fn releases_number_upwards_and_old_ones_are_pruned() {
    let site = Site::init();
    for n in 1..=4 {
        let out = release(&site, &["--keep", "2"]);
        assert!(out.contains(&format!("Published release {n} ")), "{out}");
    }
    // Two releases never run at once.
    let mut holder = Command::new("flock")
        .arg(site.data_dir.join("repo/.lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let lock = site.data_dir.join("repo/.lock");
    while Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let agent = stand_in(site.dir.path(), "penguindome-agent");
    let out = site.admin(&["release", "--agent-binary", &agent.display().to_string()]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        !out.status.success() && text(&out).contains("another `pdome-admin release`"),
        "{}",
        text(&out)
    );

    let releases: Vec<String> = std::fs::read_dir(site.data_dir.join("repo/releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut releases = releases;
    releases.sort();
    assert_eq!(releases, ["3", "4"], "only the kept releases remain");
    assert_eq!(
        std::fs::read_link(site.data_dir.join("repo/current")).unwrap(),
        Path::new("releases/4")
    );
    let packages = std::fs::read_to_string(
        site.data_dir
            .join("repo/current/apt/dists/stable/main/binary-amd64/Packages"),
    )
    .unwrap();
    let versions: Vec<&str> = packages
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .collect();
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        versions,
        [
            format!("{v}-3"),
            format!("{v}-4"),
            format!("{v}-3"),
            format!("{v}-4")
        ],
        "agent and site packages of releases 3 and 4: {packages}"
    );
    // The kept packages are really there, in every family.
    for f in [
        format!("apt/pool/main/p/penguindome-agent/penguindome-agent_{v}-3_amd64.deb"),
        format!("rpm/Packages/penguindome-agent-{v}-3.x86_64.rpm"),
        format!("arch/x86_64/penguindome-agent-{v}-3-x86_64.pkg.tar.zst.sig"),
    ] {
        assert!(
            site.data_dir.join("repo/current").join(&f).is_file(),
            "{f} missing"
        );
    }
}

#[test]
fn a_tampered_manifest_stops_the_next_release_before_anything_is_copied() {
    let site = Site::init();
    release(&site, &[]);
    // Someone who can write the release folder points a kept package at a
    // file outside it, hoping the next release copies it into the
    // repository clients download from.
    let manifest = site.data_dir.join("repo/releases/1/manifest.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let record = &mut doc["packages"][0];
    let file_name = record["file_name"].as_str().unwrap().to_string();
    record["location"] = Value::from(format!("../../../../../../etc/{file_name}"));
    std::fs::write(&manifest, serde_json::to_vec(&doc).unwrap()).unwrap();

    let agent = stand_in(site.dir.path(), "penguindome-agent");
    let out = site.admin(&["release", "--agent-binary", &agent.display().to_string()]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("its location is not a relative path of plain names"),
        "{said}"
    );
    assert!(
        said.contains("--keep 1"),
        "the error says what to do: {said}"
    );
    assert_eq!(
        std::fs::read_link(site.data_dir.join("repo/current")).unwrap(),
        Path::new("releases/1"),
        "the served release stays"
    );
    // Dropping the older packages gets the site publishing again.
    let out = release(&site, &["--keep", "1"]);
    assert!(out.contains("Published release 2 "), "{out}");
}

#[test]
fn debs_are_well_formed_and_secrets_private() {
    let site = Site::init();
    release(&site, &["--formats", "deb"]);
    let v = env!("CARGO_PKG_VERSION");
    let pool = site.data_dir.join("repo/current/apt/pool/main/p");
    let agent = pool.join(format!(
        "penguindome-agent/penguindome-agent_{v}-1_amd64.deb"
    ));
    let site_deb = pool.join(format!("penguindome-site/penguindome-site_{v}-1_all.deb"));
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&agent));
    assert!(
        info.contains("Depends: libc6 (>= 2.36), penguindome-site"),
        "{info}"
    );
    assert!(
        info.contains("postinst") && info.contains("prerm") && info.contains("postrm"),
        "{info}"
    );
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&agent));
    assert!(
        contents.contains("-rwxr-xr-x root/root")
            && contents.contains("./usr/bin/penguindome-agent"),
        "{contents}"
    );
    assert!(
        contents.contains("./usr/lib/systemd/system/penguindome.timer"),
        "{contents}"
    );

    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&site_deb));
    let toml_line = contents
        .lines()
        .find(|l| l.ends_with("./etc/penguindome/agent.toml"))
        .unwrap_or_else(|| panic!("no agent.toml: {contents}"));
    assert!(
        toml_line.starts_with("-rw-------"),
        "agent.toml stays root-only: {toml_line}"
    );
    let conffiles = ok(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&site_deb)
        .arg("Package"));
    assert_eq!(conffiles.trim(), "penguindome-site");
    let tmp = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&site_deb)
        .arg(tmp.path()));
    let conffiles = std::fs::read_to_string(tmp.path().join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/penguindome/agent.toml")
            && conffiles.contains("/etc/apt/sources.list.d/penguindome.sources"),
        "{conffiles}"
    );
    // The md5sums dpkg --verify uses are real hex digests.
    let md5sums = std::fs::read_to_string(tmp.path().join("md5sums")).unwrap();
    assert!(
        md5sums
            .lines()
            .all(|l| l.len() > 34 && l[..32].bytes().all(|b| b.is_ascii_hexdigit())),
        "{md5sums}"
    );
}

/// apt with its own state and configuration, trusting only what a
/// client's site package would: the repository key and the pinned cert.
struct AptClient {
    dir: tempfile::TempDir,
}

impl AptClient {
    /// With `auth`, the credentials the site package would install.
    fn new(p: &Published, auth: bool) -> Self {
        Self::trusting(p, auth, &p.key)
    }

    /// Like [`AptClient::new`], with `keyring` as the source's Signed-By.
    fn trusting(p: &Published, auth: bool, keyring: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "state/lists/partial",
            "cache/archives/partial",
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "etc/auth.conf.d",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        if auth {
            write(
                &d.join("etc/auth.conf.d/penguindome.conf"),
                format!(
                    "machine {} login agent password {}\n",
                    p.repo_url, p.password
                ),
            );
        }
        write(
            &d.join("etc/sources.list.d/penguindome.sources"),
            format!(
                "Types: deb\nURIs: {}/apt\nSuites: stable\nComponents: main\nSigned-By: {}\n",
                p.repo_url,
                keyring.display()
            ),
        );
        write(&d.join("etc/sources.list"), "");
        Self { dir }
    }

    /// Whether apt kept a Packages index from the repository (stored
    /// compressed where apt.conf says so, as on this machine).
    fn has_package_index(&self) -> bool {
        std::fs::read_dir(self.dir.path().join("state/lists"))
            .unwrap()
            .any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("_Packages")
            })
    }

    fn apt_get(&self, p: &Published, args: &[&str]) -> Output {
        let d = self.dir.path();
        let r = |s: &str| d.join(s).display().to_string();
        let opts = [
            format!("Dir::State={}", r("state")),
            format!("Dir::State::Lists={}", r("state/lists")),
            "Dir::State::status=/var/lib/dpkg/status".to_string(),
            format!("Dir::Cache={}", r("cache")),
            format!("Dir::Etc::SourceParts={}", r("etc/sources.list.d")),
            format!("Dir::Etc::SourceList={}", r("etc/sources.list")),
            format!("Dir::Etc::Parts={}", r("etc/apt.conf.d")),
            format!("Dir::Etc::PreferencesParts={}", r("etc/preferences.d")),
            format!("Dir::Etc::netrcparts={}", r("etc/auth.conf.d")),
            format!("Acquire::https::CaInfo={}", p.ca.display()),
            // The machine's apt.conf may turn these off; a client has them on.
            "Acquire::Check-Valid-Until=true".to_string(),
            "Acquire::Check-Date=true".to_string(),
            "APT::Sandbox::User=root".to_string(),
        ];
        let mut cmd = Command::new("apt-get");
        for o in &opts {
            cmd.arg("-o").arg(o);
        }
        cmd.args(args).env("LC_ALL", "C");
        output(&mut cmd)
    }
}

#[test]
fn the_apt_release_is_signed_anew_before_it_expires_and_indexes_stay_by_hash() {
    let p = Published::with_setup(false, |site| {
        let path = site.config_dir.join("server.toml");
        let toml = std::fs::read_to_string(&path).unwrap();
        let toml = toml.replacen("[server]\n", "[server]\napt_valid_for = \"6s\"\n", 1);
        std::fs::write(&path, toml).unwrap();
    });
    let release_file = || std::fs::read_to_string(p.current("apt/dists/stable/Release")).unwrap();
    let first = release_file();
    assert!(
        first.contains("Valid-Until: ") && first.contains("Acquire-By-Hash: yes"),
        "{first}"
    );
    let client = AptClient::new(&p, true);
    let out = client.apt_get(&p, &["update"]);
    assert!(out.status.success(), "apt-get update: {}", text(&out));
    assert!(client.has_package_index(), "fetched by hash");

    // Past its validity, the running server has signed it anew: apt
    // (Check-Valid-Until on) still takes the repository.
    std::thread::sleep(std::time::Duration::from_secs(8));
    let later = release_file();
    assert_ne!(first, later, "the server re-signed the Release");
    let out = client.apt_get(&p, &["update"]);
    assert!(
        out.status.success(),
        "apt-get update after 8 s: {}",
        text(&out)
    );

    // The next release keeps the by-hash indexes the previous one named.
    let named: Vec<String> = later
        .lines()
        .filter_map(|l| {
            l.strip_prefix(' ')?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect();
    release(&p.site, &[]);
    let by_hash = p.current("apt/dists/stable/main/binary-amd64/by-hash/SHA256");
    for hash in &named {
        assert!(by_hash.join(hash).is_file(), "{hash} was not carried over");
    }
    let out = client.apt_get(&p, &["update"]);
    assert!(
        out.status.success(),
        "apt-get update after a release: {}",
        text(&out)
    );
}

#[test]
fn apt_accepts_the_signed_repository_and_refuses_tampering() {
    let p = Published::new();
    let client = AptClient::new(&p, true);
    let out = client.apt_get(&p, &["update"]);
    assert!(out.status.success(), "apt-get update: {}", text(&out));
    assert!(client.has_package_index());
    let out = client.apt_get(
        &p,
        &["install", "--download-only", "-y", "penguindome-agent"],
    );
    assert!(
        out.status.success(),
        "apt-get install --download-only: {}",
        text(&out)
    );
    let v = env!("CARGO_PKG_VERSION");
    // The agent pulls the site package in; both came down with their hashes checked.
    for f in [
        format!("penguindome-agent_{v}-1_amd64.deb"),
        format!("penguindome-site_{v}-1_all.deb"),
    ] {
        assert!(
            client.dir.path().join("cache/archives").join(&f).is_file(),
            "{f} was not fetched: {}",
            text(&out)
        );
    }

    // Without the site's credentials the repository stays shut.
    let stranger = AptClient::new(&p, false);
    let out = stranger.apt_get(&p, &["update"]);
    assert!(
        text(&out).contains("401"),
        "unauthenticated apt: {}",
        text(&out)
    );
    assert!(
        !stranger.has_package_index(),
        "nothing fetched without credentials"
    );

    // A package changed after indexing.
    let deb = p.current(&format!(
        "apt/pool/main/p/penguindome-agent/penguindome-agent_{v}-1_amd64.deb"
    ));
    flip_last_byte(&deb);
    std::fs::remove_dir_all(client.dir.path().join("cache/archives")).unwrap();
    std::fs::create_dir_all(client.dir.path().join("cache/archives/partial")).unwrap();
    let out = client.apt_get(
        &p,
        &["install", "--download-only", "-y", "penguindome-agent"],
    );
    assert!(
        !out.status.success() && text(&out).contains("Hash Sum mismatch"),
        "tampered .deb: {}",
        text(&out)
    );

    // An index changed after signing (apt fetches it by hash, so change
    // every copy).
    let indexes = p.current("apt/dists/stable/main/binary-amd64");
    let by_hash = std::fs::read_dir(indexes.join("by-hash/SHA256"))
        .unwrap()
        .map(|e| e.unwrap().path());
    for file in by_hash.chain([indexes.join("Packages.gz"), indexes.join("Packages")]) {
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.push(0);
        std::fs::write(&file, &bytes).unwrap();
    }
    let fresh = AptClient::new(&p, true);
    let out = fresh.apt_get(&p, &["update"]);
    let t = text(&out);
    assert!(
        !out.status.success() || t.contains("unexpected size") || t.contains("Hash Sum mismatch"),
        "tampered index: {t}"
    );
    assert!(
        t.contains("unexpected size") || t.contains("Hash Sum mismatch"),
        "tampered index: {t}"
    );

    // A Release signed by another key.
    let release = std::fs::read(p.current("apt/dists/stable/Release")).unwrap();
    let (inline, detached) = sign_with_stranger(&release);
    std::fs::write(p.current("apt/dists/stable/InRelease"), inline).unwrap();
    std::fs::write(p.current("apt/dists/stable/Release.gpg"), detached).unwrap();
    let fresh = AptClient::new(&p, true);
    let out = fresh.apt_get(&p, &["update"]);
    let t = text(&out);
    assert!(
        t.contains("NO_PUBKEY") || t.contains("not signed"),
        "foreign signature: {t}"
    );
    assert!(
        !fresh.has_package_index(),
        "nothing from an untrusted index is kept"
    );
}

/// dnf into an --installroot with gpgcheck and repo_gpgcheck.
struct DnfClient {
    dir: tempfile::TempDir,
}

impl DnfClient {
    /// With `auth`, the credentials the site package would install.
    fn new(p: &Published, auth: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("root/etc/dnf")).unwrap();
        if auth {
            // What the agent writes on an rpm client.
            repo_access::write(
                &d.join("root"),
                std::slice::from_ref(&p.repo_url),
                &p.client,
            )
            .unwrap();
        }
        write(&d.join("home/.rpmmacros"), "%_dbpath /var/lib/rpm\n");
        write(
            &d.join("dnf.conf"),
            "[main]\ngpgcheck=1\nrepo_gpgcheck=1\nskip_if_unavailable=False\ninstall_weak_deps=False\nkeepcache=False\n",
        );
        // The stand-in for the distribution's glibc, which the agent requires.
        let spec = d.join("glibc.spec");
        write(
            &spec,
            "Name: glibc\nVersion: 2.40\nRelease: 1\nSummary: stand-in\nLicense: none\nBuildArch: noarch\nAutoReq: no\nProvides: /bin/sh\n\
             %description\nstand-in\n%files\n",
        );
        ok(Command::new("rpmbuild")
            .env("HOME", d.join("home"))
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", d.join("build").display()))
            .arg(&spec));
        let stub_repo = d.join("stub");
        std::fs::create_dir_all(&stub_repo).unwrap();
        for e in walk(&d.join("build/RPMS")) {
            std::fs::copy(&e, stub_repo.join(e.file_name().unwrap())).unwrap();
        }
        ok(Command::new("createrepo_c").arg("--quiet").arg(&stub_repo));
        write(
            &d.join("repos/penguindome.repo"),
            format!(
                "[penguindome]\nname=PenguinDome\nbaseurl={}/rpm\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n\
                 gpgkey=file://{}\nsslcacert={}\nsslverify=1\nmetadata_expire=0\n{}\n\
                 [stub]\nname=stub\nbaseurl=file://{}\nenabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n",
                p.repo_url,
                p.key.display(),
                p.ca.display(),
                if auth {
                    // As the site package names the client's own credential.
                    "username=$penguindome_repo_user\npassword=$penguindome_repo_password\n"
                } else {
                    ""
                },
                stub_repo.display()
            ),
        );
        Self { dir }
    }

    fn dnf(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        output(
            Command::new("/usr/bin/dnf")
                .env("HOME", d.join("home"))
                .env("LC_ALL", "C")
                .arg("-y")
                .arg("--refresh")
                .arg(format!("--installroot={}", d.join("root").display()))
                .arg("--releasever=1")
                .arg(format!("--config={}", d.join("dnf.conf").display()))
                .arg(format!("--setopt=reposdir={}", d.join("repos").display()))
                .arg(format!("--setopt=cachedir={}", d.join("cache").display()))
                // The empty root has no shell for scriptlets.
                .arg("--setopt=tsflags=noscripts")
                .args(args),
        )
    }
}

/// The apt keyring a site package of the current release installs.
fn site_keyring(p: &Published, release: u32, into: &Path) -> PathBuf {
    let v = env!("CARGO_PKG_VERSION");
    let deb = p.current(&format!(
        "apt/pool/main/p/penguindome-site/penguindome-site_{v}-{release}_all.deb"
    ));
    let root = into.join(format!("site-{release}"));
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    root.join("usr/share/keyrings/penguindome-archive-keyring.asc")
}

#[test]
fn apt_follows_a_key_rotation_through_the_site_package() {
    let p = Published::new();
    let work = tempfile::tempdir().unwrap();
    let out = p.site.admin(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", text(&out));
    release(&p.site, &[]);
    // During the window the site package trusts both keys.
    let both = site_keyring(&p, 2, work.path());
    let text_of = |f: &Path| std::fs::read_to_string(f).unwrap();
    assert_eq!(
        text_of(&both).matches("BEGIN PGP PUBLIC KEY BLOCK").count(),
        1
    );
    let out = p.site.admin(&["keys", "rotate", "--finish"]);
    assert!(out.status.success(), "{}", text(&out));
    release(&p.site, &[]);
    let new_only = site_keyring(&p, 3, work.path());
    assert_ne!(text_of(&new_only), text_of(&both));
    // Re-signed with the new key: a machine that took the window's site
    // package updates; one that kept the old key alone is refused.
    let upgraded = AptClient::trusting(&p, true, &both);
    let out = upgraded.apt_get(&p, &["update"]);
    assert!(out.status.success(), "apt-get update: {}", text(&out));
    assert!(upgraded.has_package_index());
    let stale = AptClient::new(&p, true);
    let out = stale.apt_get(&p, &["update"]);
    assert!(
        !stale.has_package_index(),
        "the old key alone must not verify the re-signed repository: {}",
        text(&out)
    );
    // What the agent writes into such a machine's keyring before its
    // upgrade (the keys it accepts after following the rotation) fixes it.
    let accepted: Vec<PublicKey> = [&p.key, &new_only]
        .iter()
        .map(|f| PublicKey::from_bytes(text_of(f).as_bytes()).unwrap())
        .collect();
    let root = work.path().join("stale-root");
    let keyring = root.join("usr/share/keyrings/penguindome-archive-keyring.asc");
    std::fs::create_dir_all(keyring.parent().unwrap()).unwrap();
    std::fs::copy(&p.key, &keyring).unwrap();
    let written = penguindome_agent::repo_keys::refresh(&root, &accepted).unwrap();
    assert_eq!(written, std::slice::from_ref(&keyring));
    let fixed = AptClient::trusting(&p, true, &keyring);
    let out = fixed.apt_get(&p, &["update"]);
    assert!(out.status.success(), "apt-get update: {}", text(&out));
    assert!(fixed.has_package_index());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn dnf_installs_from_the_signed_repository_and_refuses_tampering() {
    let p = Published::new();
    let client = DnfClient::new(&p, true);
    let out = client.dnf(&["install", "penguindome-agent"]);
    assert!(out.status.success(), "dnf install: {}", text(&out));
    let root = client.dir.path().join("root");
    assert!(root.join("usr/bin/penguindome-agent").is_file());
    let mode = std::fs::metadata(root.join("etc/penguindome/agent.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "agent.toml mode");
    assert!(root.join("etc/yum.repos.d/penguindome.repo").is_file());
    let q = ok(Command::new("rpm")
        .env("HOME", client.dir.path().join("home"))
        .arg("--root")
        .arg(&root)
        .args([
        "-q",
        "--qf",
        "%{NAME} %{VERSION}-%{RELEASE} %|DSAHEADER?{%{DSAHEADER:pgpsig}}:{%|RSAHEADER?{%{RSAHEADER:pgpsig}}:{unsigned}|}|\n",
        "penguindome-agent",
        "penguindome-site",
    ]));
    assert!(
        q.contains("penguindome-agent") && q.contains("penguindome-site"),
        "{q}"
    );
    assert!(
        !q.contains("unsigned") && q.contains("EdDSA/SHA256"),
        "installed packages carry signatures: {q}"
    );

    // Without the site's credentials the repository stays shut.
    let out = DnfClient::new(&p, false).dnf(&["install", "penguindome-agent"]);
    assert!(
        !out.status.success() && text(&out).contains("401"),
        "unauthenticated dnf: {}",
        text(&out)
    );

    // A repository signed by another key.
    let repomd = std::fs::read(p.current("rpm/repodata/repomd.xml")).unwrap();
    let good_sig = std::fs::read(p.current("rpm/repodata/repomd.xml.asc")).unwrap();
    let (_, stranger) = sign_with_stranger(&repomd);
    std::fs::write(p.current("rpm/repodata/repomd.xml.asc"), stranger).unwrap();
    let fresh = DnfClient::new(&p, true);
    let out = fresh.dnf(&["install", "penguindome-agent"]);
    assert!(
        !out.status.success() && text(&out).contains("GPG"),
        "foreign signature: {}",
        text(&out)
    );

    // An index changed after signing.
    std::fs::write(p.current("rpm/repodata/repomd.xml.asc"), good_sig).unwrap();
    let mut edited = repomd.clone();
    edited.extend_from_slice(b"<!-- edited -->\n");
    std::fs::write(p.current("rpm/repodata/repomd.xml"), &edited).unwrap();
    let fresh = DnfClient::new(&p, true);
    let out = fresh.dnf(&["install", "penguindome-agent"]);
    assert!(
        !out.status.success() && text(&out).contains("GPG"),
        "tampered repomd: {}",
        text(&out)
    );
    std::fs::write(p.current("rpm/repodata/repomd.xml"), &repomd).unwrap();

    // A package changed after signing.
    let v = env!("CARGO_PKG_VERSION");
    let rpm = p.current(&format!("rpm/Packages/penguindome-agent-{v}-1.x86_64.rpm"));
    flip_last_byte(&rpm);
    let fresh = DnfClient::new(&p, true);
    let out = fresh.dnf(&["install", "penguindome-agent"]);
    assert!(
        !out.status.success(),
        "tampered rpm installed: {}",
        text(&out)
    );
    assert!(
        !fresh
            .dir
            .path()
            .join("root/usr/bin/penguindome-agent")
            .exists()
    );
}

#[test]
fn rpm_imports_the_server_key_and_checks_package_signatures() {
    let p = Published::new();
    let db = tempfile::tempdir().unwrap();
    ok(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(db.path())
        .arg("--import")
        .arg(&p.key));
    let v = env!("CARGO_PKG_VERSION");
    let rpm = p.current(&format!("rpm/Packages/penguindome-agent-{v}-1.x86_64.rpm"));
    let out = ok(Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(db.path())
        .args(["--checksig", "-v"])
        .arg(&rpm));
    assert!(
        out.contains("Header V4 EdDSA/SHA256 Signature") && out.contains("OK"),
        "{out}"
    );
    assert!(!out.contains("NOKEY") && !out.contains("BAD"), "{out}");
}

/// pacman into a test root with SigLevel Required and its own keyring.
struct PacmanClient {
    dir: tempfile::TempDir,
}

impl PacmanClient {
    /// With `auth`, the credentials the site package would install.
    fn new(p: &Published, auth: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "root/var/lib/pacman/local",
            "root/var/cache/pacman/pkg",
            "root/etc/pacman.d/hooks",
            "gnupg",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // The stand-in for the distribution's glibc, which the agent needs.
        write(
            &d.join("root/var/lib/pacman/local/glibc-2.40-1/desc"),
            "%NAME%\nglibc\n\n%VERSION%\n2.40-1\n\n%ARCH%\nx86_64\n\n",
        );
        write(
            &d.join("root/var/lib/pacman/local/pacman-6.0.2-1/desc"),
            "%NAME%\npacman\n\n%VERSION%\n6.0.2-1\n\n%ARCH%\nx86_64\n\n",
        );
        write(
            &d.join("root/var/lib/pacman/local/pacman-6.0.2-1/files"),
            "%FILES%\n\n",
        );
        write(
            &d.join("root/var/lib/pacman/local/glibc-2.40-1/files"),
            "%FILES%\n\n",
        );
        write(&d.join("root/var/lib/pacman/local/ALPM_DB_VERSION"), "9\n");
        let root = d.join("root");
        write(
            &d.join("pacman.conf"),
            format!(
                "[options]\nRootDir = {root}\nDBPath = {root}/var/lib/pacman/\nCacheDir = {root}/var/cache/pacman/pkg/\n\
                 LogFile = {root}/var/log/pacman.log\nHookDir = {root}/etc/pacman.d/hooks/\nGPGDir = {gpg}\n\
                 Architecture = x86_64\nSigLevel = Required DatabaseRequired TrustedOnly\nLocalFileSigLevel = Required\n\n\
                 [penguindome]\n{server}\n",
                root = root.display(),
                gpg = d.join("gnupg").display(),
                server = {
                    let url = p.plain_repo_url.as_deref().expect("a plain listener");
                    if auth {
                        // As the site package includes the file the agent writes.
                        repo_access::write(&root, &[url.to_string()], &p.client).unwrap();
                        format!(
                            "Include = {}/etc/pacman.d/penguindome-server.conf",
                            root.display()
                        )
                    } else {
                        format!("Server = {url}/arch/$arch")
                    }
                },
            ),
        );
        let fpr = ok(Command::new("gpg")
            .arg("--show-keys")
            .arg("--with-colons")
            .arg(&p.key))
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .expect("a fingerprint");
        let key_cmd = |args: &[&str]| {
            ok(Command::new("pacman-key")
                .arg("--config")
                .arg(d.join("pacman.conf"))
                .arg("--gpgdir")
                .arg(d.join("gnupg"))
                .args(args));
        };
        key_cmd(&["--init"]);
        key_cmd(&["--add", &p.key.display().to_string()]);
        key_cmd(&["--lsign-key", &fpr]);
        Self { dir }
    }

    fn pacman(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        let mut cmd = Command::new("pacman");
        cmd.arg("--config")
            .arg(d.join("pacman.conf"))
            .env("LC_ALL", "C");
        if args.first().is_some_and(|a| a.starts_with("-S")) {
            // The test root has no shell for install scripts.
            cmd.args(["--noconfirm", "--noscriptlet"]);
        }
        output(cmd.args(args))
    }
}

impl Drop for PacmanClient {
    fn drop(&mut self) {
        // gpg-agent lingers per keyring; stop it while its folder exists.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.dir.path().join("gnupg"))
            .args(["--kill", "all"])
            .output();
    }
}

#[test]
fn pacman_installs_with_signatures_required_and_refuses_tampering() {
    let p = Published::with_plain_listener();
    let client = PacmanClient::new(&p, true);
    let out = client.pacman(&["-Sy", "penguindome-agent"]);
    assert!(out.status.success(), "pacman -Sy: {}", text(&out));
    let root = client.dir.path().join("root");
    assert!(root.join("usr/bin/penguindome-agent").is_file());
    let mode = std::fs::metadata(root.join("etc/penguindome/agent.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "agent.toml mode");
    let qi = client.pacman(&["-Qi", "penguindome-agent"]);
    let qi = text(&qi);
    assert!(qi.contains("Validated By    : Signature"), "{qi}");
    assert!(
        qi.contains("penguindome-site"),
        "depends on the site package: {qi}"
    );
    // pacman checks every installed file against the package's .MTREE.
    let qkk = client.pacman(&["-Qkk", "penguindome-agent"]);
    assert!(qkk.status.success(), "pacman -Qkk: {}", text(&qkk));
    assert!(text(&qkk).contains("0 altered files"), "{}", text(&qkk));
    // The files database lists what the package installs.
    let fy = client.pacman(&["-Fy"]);
    assert!(fy.status.success(), "pacman -Fy: {}", text(&fy));
    let fl = text(&client.pacman(&["-Fl", "penguindome-agent"]));
    assert!(
        fl.contains("penguindome-agent usr/bin/penguindome-agent"),
        "pacman -Fl: {fl}"
    );

    // Without the site's credentials the repository stays shut.
    let out = PacmanClient::new(&p, false).pacman(&["-Sy", "penguindome-agent"]);
    assert!(
        !out.status.success() && text(&out).contains("401"),
        "unauthenticated pacman: {}",
        text(&out)
    );

    // A package changed after signing.
    let v = env!("CARGO_PKG_VERSION");
    let pkg = p.current(&format!(
        "arch/x86_64/penguindome-agent-{v}-1-x86_64.pkg.tar.zst"
    ));
    let good = flip_last_byte(&pkg);
    let fresh = PacmanClient::new(&p, true);
    let out = fresh.pacman(&["-Sy", "penguindome-agent"]);
    assert!(
        !out.status.success(),
        "tampered package installed: {}",
        text(&out)
    );
    assert!(
        !fresh
            .dir
            .path()
            .join("root/usr/bin/penguindome-agent")
            .exists()
    );
    std::fs::write(&pkg, &good).unwrap();

    // A database changed after signing.
    let db_path = p.current("arch/x86_64/penguindome.db");
    let good_db = std::fs::read(&db_path).unwrap();
    let mut edited = good_db.clone();
    edited.extend_from_slice(&[0; 512]);
    std::fs::write(&db_path, &edited).unwrap();
    let fresh = PacmanClient::new(&p, true);
    let out = fresh.pacman(&["-Sy", "penguindome-agent"]);
    assert!(
        !out.status.success() && text(&out).contains("PGP signature"),
        "tampered db: {}",
        text(&out)
    );
    std::fs::write(&db_path, &good_db).unwrap();

    // A database signed by another key.
    let db = std::fs::read(p.current("arch/x86_64/penguindome.db")).unwrap();
    let stranger = SecretKey::generate("Stranger <stranger@example.invalid>").unwrap();
    std::fs::write(
        p.current("arch/x86_64/penguindome.db.sig"),
        stranger.sign(&db).unwrap(),
    )
    .unwrap();
    let fresh = PacmanClient::new(&p, true);
    let out = fresh.pacman(&["-Sy", "penguindome-agent"]);
    let t = text(&out);
    assert!(
        !out.status.success() && (t.contains("PGP signature") || t.contains("unknown")),
        "foreign db signature: {t}"
    );
}

#[test]
fn build_packages_makes_server_and_agent_packages() {
    let bins = tempfile::tempdir().unwrap();
    for b in ["penguindome-agent", "penguindome-server", "pdome-admin"] {
        stand_in(bins.path(), b);
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = ok(Command::new(bin("pdome-admin"))
        .arg("build-packages")
        .arg("--bin-dir")
        .arg(bins.path())
        .arg("--out")
        .arg(out_dir.path()));
    let v = env!("CARGO_PKG_VERSION");
    for f in [
        format!("penguindome-server_{v}-1_amd64.deb"),
        format!("penguindome-agent_{v}-1_amd64.deb"),
        format!("penguindome-server-{v}-1.x86_64.rpm"),
        format!("penguindome-server-{v}-1-x86_64.pkg.tar.zst"),
    ] {
        assert!(out_dir.path().join(&f).is_file(), "{f} missing: {out}");
    }
    the_server_deb_carries_everything(out_dir.path());
    the_server_rpm_and_arch_package_set_up_the_system(out_dir.path());
    the_pkgbuild_agrees_with_the_arch_packages(out_dir.path());
    every_package_carries_man_pages_and_completions(out_dir.path());
    every_arch_package_reads_back_with_the_alpm_parsers(out_dir.path());
}

/// Each .pkg.tar.zst starts with .PKGINFO, its .PKGINFO and .BUILDINFO
/// parse as version 2 with the ALPM project's parsers, and its .MTREE says
/// exactly what makepkg's bsdtar invocation (pacman 6.0's, ALPM-MTREEv1)
/// says of the unpacked files.
fn every_arch_package_reads_back_with_the_alpm_parsers(out_dir: &Path) {
    use std::str::FromStr;
    let v = env!("CARGO_PKG_VERSION");
    for name in ["penguindome-server", "penguindome-agent"] {
        let pkg = out_dir.join(format!("{name}-{v}-1-x86_64.pkg.tar.zst"));
        let listing = ok(Command::new("bsdtar").arg("-tf").arg(&pkg));
        assert_eq!(
            listing.lines().next(),
            Some(".PKGINFO"),
            "{name}: {listing}"
        );
        let dir = tempfile::tempdir().unwrap();
        ok(Command::new("bsdtar")
            .arg("-xpf")
            .arg(&pkg)
            .arg("-C")
            .arg(dir.path()));
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();

        let pkginfo = alpm_pkginfo::PackageInfoV2::from_str(&read(".PKGINFO"))
            .unwrap_or_else(|e| panic!("{name}'s .PKGINFO: {e}"));
        assert_eq!(pkginfo.pkgname.to_string(), name);
        assert_eq!(pkginfo.pkgver.to_string(), format!("{v}-1"));
        let buildinfo = alpm_buildinfo::BuildInfoV2::from_str(&read(".BUILDINFO"))
            .unwrap_or_else(|e| panic!("{name}'s .BUILDINFO: {e}"));
        assert_eq!(buildinfo.buildtool.to_string(), "pdome-admin");

        let ours = ok(Command::new("gzip")
            .arg("-dc")
            .arg(dir.path().join(".MTREE")));
        let makepkgs = ok(Command::new("sh").current_dir(dir.path()).arg("-c").arg(
            "find . -mindepth 1 ! -name .MTREE -printf '%P\\0' | LANG=C bsdtar -cnf - \
             --format=mtree --options='!all,use-set,type,uid,gid,mode,time,size,md5,sha256,link' \
             --null --files-from -",
        ));
        let entries = |text: &str| -> std::collections::BTreeMap<PathBuf, String> {
            let alpm_mtree::Mtree::V1(paths) = alpm_mtree::Mtree::from_str(text)
                .unwrap_or_else(|e| panic!("{name}'s .MTREE: {e}\n{text}"))
            else {
                panic!("{name}: not ALPM-MTREEv1:\n{text}");
            };
            paths
                .into_iter()
                .map(|p| (p.to_path_buf(), format!("{p:?}")))
                .collect()
        };
        let ours = entries(&ours);
        assert!(ours.contains_key(Path::new(&format!("./usr/bin/{name}"))));
        assert_eq!(ours, entries(&makepkgs), "{name}: .MTREE vs bsdtar's");
    }
}

/// Man pages and completions, in each distro's own folders, from the
/// binaries' clap definitions; man renders them and each shell loads them.
fn every_package_carries_man_pages_and_completions(out_dir: &Path) {
    let v = env!("CARGO_PKG_VERSION");
    let listings = [
        (
            "deb",
            ok(Command::new("dpkg-deb")
                .arg("--contents")
                .arg(out_dir.join(format!("penguindome-agent_{v}-1_amd64.deb")))),
            "/usr/share/zsh/vendor-completions/_penguindome-agent",
        ),
        (
            "rpm",
            ok(Command::new("rpm")
                .arg("-qlp")
                .arg(out_dir.join(format!("penguindome-agent-{v}-1.x86_64.rpm")))),
            "/usr/share/zsh/site-functions/_penguindome-agent",
        ),
        (
            "arch",
            ok(Command::new("bsdtar")
                .arg("-tf")
                .arg(out_dir.join(format!("penguindome-agent-{v}-1-x86_64.pkg.tar.zst")))),
            "usr/share/zsh/site-functions/_penguindome-agent",
        ),
    ];
    for (family, listing, zsh) in &listings {
        for path in [
            "usr/share/man/man1/penguindome-agent.1.gz",
            "usr/share/man/man1/penguindome-agent-enroll.1.gz",
            "usr/share/bash-completion/completions/penguindome-agent",
            "usr/share/fish/vendor_completions.d/penguindome-agent.fish",
            zsh,
        ] {
            assert!(
                listing.lines().any(|l| l.ends_with(path)),
                "{family}: {path} missing: {listing}"
            );
        }
        assert!(
            !listing.contains("generate-docs") && !listing.contains("shell-session"),
            "{family}: a hidden command has a page: {listing}"
        );
    }
    let root = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(out_dir.join(format!("penguindome-server_{v}-1_amd64.deb")))
        .arg(root.path()));
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(out_dir.join(format!("penguindome-agent_{v}-1_amd64.deb")))
        .arg(root.path()));
    man_renders_each_page(root.path());
    let share = root.path().join("usr/share");
    for name in ["penguindome-agent", "penguindome-server", "pdome-admin"] {
        let bash = share.join("bash-completion/completions").join(name);
        let registered = ok(Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && complete -p {name}", bash.display())));
        assert!(registered.contains(name), "{name}: {registered}");
        ok(Command::new("zsh").arg("-n").arg(
            share
                .join("zsh/vendor-completions")
                .join(format!("_{name}")),
        ));
        ok(Command::new("fish").arg("--no-execute").arg(
            share
                .join("fish/vendor_completions.d")
                .join(format!("{name}.fish")),
        ));
    }
}

/// `man -l` renders the pages; the top ones also say which files each
/// program uses and how it is started, which a subcommand's page does not
/// repeat.
fn man_renders_each_page(root: &Path) {
    let man1 = root.join("usr/share/man/man1");
    for (page, says, files) in [
        (
            "penguindome-agent.1.gz",
            "Enroll this machine",
            Some("/var/lib/penguindome-agent/client-key.asc"),
        ),
        (
            "penguindome-server.1.gz",
            "--config-dir",
            Some("/etc/penguindome/access.toml"),
        ),
        (
            "pdome-admin.1.gz",
            "A root shell on a client",
            Some("pdome-admin tokens create"),
        ),
        (
            "pdome-admin-issues-audit.1.gz",
            "pdome-admin-issues-audit",
            None,
        ),
    ] {
        let shown = ok(Command::new("man")
            .env("MANWIDTH", "200")
            .arg("-l")
            .arg(man1.join(page)));
        assert!(
            shown.contains("SYNOPSIS") && shown.contains(says),
            "man -l {page}: {shown}"
        );
        match files {
            Some(item) => assert!(
                shown.contains("FILES") && shown.contains("EXAMPLES") && shown.contains(item),
                "man -l {page}: {shown}"
            ),
            None => assert!(!shown.contains("FILES"), "man -l {page}: {shown}"),
        }
    }
    // FILES points at the annotated examples; the package has them.
    let examples = root.join("usr/share/doc/penguindome-server/examples");
    assert_eq!(
        std::fs::read_to_string(examples.join("server.toml")).unwrap(),
        std::fs::read_to_string(workspace().join("examples/server.toml")).unwrap()
    );
    assert!(examples.join("agent.toml").is_file());
}

/// The server's .deb carries the binaries, units and the facts schema.
fn the_server_deb_carries_everything(out_dir: &Path) {
    let v = env!("CARGO_PKG_VERSION");
    let server_deb = out_dir.join(format!("penguindome-server_{v}-1_amd64.deb"));
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&server_deb));
    for path in [
        "./usr/bin/penguindome-server",
        "./usr/bin/pdome-admin",
        "./usr/lib/penguindome/agent/penguindome-agent",
        "./usr/lib/systemd/system/penguindome-server.service",
        "./usr/lib/systemd/system/penguindome-audit.service",
        "./usr/lib/systemd/system/penguindome-audit.timer",
        "./usr/lib/sysusers.d/penguindome-server.conf",
        "./usr/share/penguindome/schema/facts-v2/os_updates.json",
        "./usr/share/penguindome/schema/facts-v2/hd_encryption.json",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in the server package: {contents}"
        );
    }
    // The published schema is the repository's, byte for byte.
    let packaged = ok(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xOf - ./usr/share/penguindome/schema/facts-v2/firewall.json",
        server_deb.display()
    )));
    let published =
        std::fs::read_to_string(workspace().join("protocol/schema/facts-v2/firewall.json"))
            .unwrap();
    assert_eq!(packaged, published);
}

/// The server's .rpm creates its user; its Arch package needs systemd.
fn the_server_rpm_and_arch_package_set_up_the_system(out_dir: &Path) {
    let v = env!("CARGO_PKG_VERSION");
    let rpm = out_dir.join(format!("penguindome-server-{v}-1.x86_64.rpm"));
    let scripts = ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    assert!(scripts.contains("systemd-sysusers"), "{scripts}");
    let info = ok(Command::new("bsdtar")
        .arg("-xOf")
        .arg(out_dir.join(format!("penguindome-server-{v}-1-x86_64.pkg.tar.zst")))
        .arg(".PKGINFO"));
    assert!(
        info.contains("depend = systemd") && info.contains(&format!("pkgver = {v}-1")),
        "{info}"
    );
}

/// arch/PKGBUILD (for building on Arch from source) agrees with what
/// pdome-admin builds: version and dependencies.
fn the_pkgbuild_agrees_with_the_arch_packages(out_dir: &Path) {
    let v = env!("CARGO_PKG_VERSION");
    let build_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(build_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let srcinfo = ok(Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .args(
            ["BUILDDIR", "PKGDEST", "SRCDEST", "SRCPKGDEST", "LOGDEST"]
                .map(|v| format!("{v}={}", build_dir.path().display())),
        )
        .args(["makepkg", "--printsrcinfo"])
        .current_dir(workspace().join("arch")));
    assert!(srcinfo.contains(&format!("pkgver = {v}\n")), "{srcinfo}");
    for name in ["penguindome-agent", "penguindome-server"] {
        let section = srcinfo
            .split("\n\n")
            .find(|s| s.starts_with(&format!("pkgname = {name}")))
            .unwrap_or_else(|| panic!("{name} not in .SRCINFO: {srcinfo}"));
        let mut want: Vec<&str> = section
            .lines()
            .filter_map(|l| l.trim().strip_prefix("depends = "))
            .collect();
        let pkginfo = ok(Command::new("bsdtar")
            .arg("-xOf")
            .arg(out_dir.join(format!("{name}-{v}-1-x86_64.pkg.tar.zst")))
            .arg(".PKGINFO"));
        let mut got: Vec<&str> = pkginfo
            .lines()
            .filter_map(|l| l.strip_prefix("depend = "))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{name}: .PKGINFO against PKGBUILD");
    }
}

/// Status of a GET with optional Basic credentials, trusting the site's cert.
fn fetch(p: &Published, url: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let a = http::get(url, &p.ca, auth);
    (a.status, a.headers)
}

#[test]
fn repository_access_follows_the_rules() {
    let p = Published::new();
    let key_url = format!("{}/key.asc", p.repo_url);
    let (code, headers) = fetch(&p, &key_url, None);
    assert_eq!(code, 401, "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{headers}"
    );
    assert_eq!(
        fetch(&p, &key_url, Some(("agent", "wrong-password"))).0,
        401
    );
    let (code, headers) = fetch(&p, &key_url, Some(("agent", &p.password)));
    assert_eq!(code, 200, "{headers}");
    // Clients must never keep stale metadata because of a date.
    assert!(
        !headers.to_ascii_lowercase().contains("last-modified"),
        "{headers}"
    );
    // Bookkeeping and paths outside the release are not served.
    for path in ["manifest.json", "../current/key.asc", ".staging"] {
        let (code, _) = fetch(
            &p,
            &format!("{}/{path}", p.repo_url),
            Some(("agent", &p.password)),
        );
        assert!(code == 404 || code == 400, "{path}: {code}");
    }

    // A server-wide user granted through a group.
    let set = Command::new(bin("pdome-admin"))
        .arg("--config-dir")
        .arg(&p.site.config_dir)
        .args(["password", "set", "alice", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"correct horse\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(set.status.success(), "{}", text(&set));
    let out = p.site.admin(&["access", "group", "ops", "alice"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = p.site.admin(&["access", "grant", "repo", "@ops"]);
    assert!(out.status.success(), "{}", text(&out));
    let allowed = |auth: Option<(&str, &str)>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if fetch(&p, &key_url, auth).0 == 200 {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    assert!(
        allowed(Some(("alice", "correct horse"))),
        "the server picks up new rules by itself"
    );
    // An address range lets clients in without a password.
    assert_eq!(fetch(&p, &key_url, None).0, 401);
    let out = p.site.admin(&["access", "allow-ip", "repo", "127.0.0.0/8"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(allowed(None), "127.0.0.0/8 is allowed");
    // The hashes are PBKDF2-SHA256 and the file is not world-readable.
    let access = std::fs::read_to_string(p.site.config_dir.join("access.toml")).unwrap();
    assert!(
        access.contains("$pbkdf2-sha256$i=600000,") && !access.contains("correct horse"),
        "{access}"
    );
    let mode = std::fs::metadata(p.site.config_dir.join("access.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "access.toml mode {mode:o}");
    let list = p.site.admin(&["password", "list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout)
            .contains("repo: addresses 127.0.0.0/8; own users agent; users -; groups ops"),
        "{}",
        text(&list)
    );
}

#[test]
fn site_packages_carry_no_secret() {
    let p = Published::new();
    let v = env!("CARGO_PKG_VERSION");
    let tmp = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(p.current(&format!(
            "apt/pool/main/p/penguindome-site/penguindome-site_{v}-1_all.deb"
        )))
        .arg(tmp.path()));
    // Each client fetches with its own credential, written by its agent.
    assert!(!tmp.path().join("etc/apt/auth.conf.d").exists());
    let agent_toml =
        std::fs::read_to_string(tmp.path().join("etc/penguindome/agent.toml")).unwrap();
    assert!(
        !agent_toml.contains("enrollment_credential"),
        "{agent_toml}"
    );
    assert!(!agent_toml.contains(&p.password));
    let sources = std::fs::read_to_string(
        tmp.path()
            .join("etc/apt/sources.list.d/penguindome.sources"),
    )
    .unwrap();
    assert!(
        sources.contains(&format!("URIs: {}/apt", p.repo_url))
            && sources.contains("Signed-By: /usr/share/keyrings/penguindome-archive-keyring.asc"),
        "{sources}"
    );
    let ca_conf =
        std::fs::read_to_string(tmp.path().join("etc/apt/apt.conf.d/60penguindome")).unwrap();
    assert!(
        ca_conf.contains("Acquire::https::127.0.0.1::CaInfo"),
        "{ca_conf}"
    );
}

#[test]
fn download_release_serves_packages_and_bootstrap_scripts() {
    let p = Published::new();
    let auth = Some(("agent", p.password.as_str()));
    let v = env!("CARGO_PKG_VERSION");
    let url = |q: &str| format!("{}/penguindome/v1/download_release?{q}", p.site.url);
    assert_eq!(fetch(&p, &url("format=deb"), None).0, 401);
    assert_eq!(fetch(&p, &url("format=zip"), auth).0, 400);

    let get = |q: &str| -> Vec<u8> {
        let out = output(
            Command::new("curl")
                .args(["--silent", "--show-error", "--fail", "--cacert"])
                .arg(&p.ca)
                .arg("--user")
                .arg(format!("agent:{}", p.password))
                .arg(url(q)),
        );
        assert!(out.status.success(), "{q}: {}", text(&out));
        out.stdout
    };
    // The newest agent package itself, byte for byte.
    let deb = get("format=deb");
    let on_disk = std::fs::read(p.current(&format!(
        "apt/pool/main/p/penguindome-agent/penguindome-agent_{v}-1_amd64.deb"
    )))
    .unwrap();
    assert!(
        deb == on_disk,
        "download_release?format=deb is the agent .deb"
    );

    // Bootstrap scripts: valid shell that carries the site package intact.
    for (format, site_file) in [
        (
            "deb",
            format!("apt/pool/main/p/penguindome-site/penguindome-site_{v}-1_all.deb"),
        ),
        (
            "rpm",
            format!("rpm/Packages/penguindome-site-{v}-1.noarch.rpm"),
        ),
        (
            "arch",
            format!("arch/x86_64/penguindome-site-{v}-1-any.pkg.tar.zst"),
        ),
    ] {
        let script = String::from_utf8(get(&format!("format={format}&bootstrap=1"))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.sh");
        write(&path, &script);
        ok(Command::new("sh").arg("-n").arg(&path));
        let embedded: String = script
            .split("<<'PENGUINDOME_PACKAGE'\n")
            .nth(1)
            .and_then(|rest| rest.split("PENGUINDOME_PACKAGE\n").next())
            .unwrap_or_else(|| panic!("{format}: no package in the script"))
            .replace('\n', "");
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(embedded)
            .unwrap();
        assert!(
            bytes == std::fs::read(p.current(&site_file)).unwrap(),
            "{format}: the script carries {site_file}"
        );
        let installs = match format {
            "deb" => "apt-get install -y penguindome-agent",
            "rpm" => "dnf -y --refresh install penguindome-agent",
            // Only the site's repository is refreshed: no partial upgrade.
            _ => "pacman --config \"$tmp/pacman.conf\" -Sy --noconfirm --needed penguindome-agent",
        };
        assert!(script.contains(installs), "{format}: {script}");
        assert_wrapped(&script);
    }
}

/// Nothing runs before the script's last line calls `main`: a truncated
/// download defines (part of) a function and runs nothing.
fn assert_wrapped(script: &str) {
    assert!(script.trim_end().ends_with("\nmain \"$@\""), "{script}");
    let before_main = script.split("\nmain() {\n").next().unwrap();
    for line in before_main.lines() {
        let line = line.trim();
        assert!(
            line.is_empty() || line.starts_with('#') || line == "set -eu",
            "runs before main: {line:?}"
        );
    }
}

//! The web view in a real browser (Debian's chromium, driven through
//! chromedriver over WebDriver): log in, read a seeded fleet, filter, open
//! a client and its disk-encryption answer and issue, log out; a hostile
//! host name stays text; pages refuse without a login; screenshots of each
//! page land in target/tmp/web-screenshots/.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use penguindome_agent::transport::Transport;
use penguindome_protocol::facts::fixtures;
use penguindome_protocol::facts::{Known, to_value};
use penguindome_tests::{SimClient, Site, free_port, text};

const HOSTILE: &str = "<script>document.title='owned'</script><img src=x onerror=alert(1)>";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (apt install chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        // The site's certificate is its own; the test trusts it as agents do.
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-background-networking",
                     "--disable-component-update", "--disable-gpu", "--window-size=1280,1024"],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn snap(b: &Client, name: &str) {
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Three clients: one compliant, one without disk encryption (and its
/// issue), one whose host name is markup.
fn seed(site: &Site) {
    let config = site.agent_config();
    let transport = Transport::new(&config).unwrap();
    let mut plain = fixtures::compliant();
    plain["hd_encryption"] = to_value(&fixtures::disks(
        vec![fixtures::filesystem("/", Known::Value(false))],
        vec![],
    ));
    for (host, plugins) in [
        ("desk-01", fixtures::compliant()),
        ("laptop-07", plain),
        (HOSTILE, fixtures::compliant()),
    ] {
        let client = SimClient::enroll(&config, &transport, host).unwrap();
        let report = SimClient::report(host, plugins);
        assert_eq!(client.submit(&transport, &report).status, 200, "{host}");
    }
    let out = site.admin(&[
        "issues",
        "open",
        "--host",
        "laptop-07",
        "--issue",
        "disk-encryption",
        "--detail",
        "/ is not encrypted",
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

fn users(site: &Site) {
    site.set_password("auditor", "web pass 1");
    site.set_password("fleetonly", "web pass 2");
    for args in [
        ["access", "grant", "web_fleet", "auditor"],
        ["access", "grant", "web_clients", "auditor"],
        ["access", "grant", "web_fleet", "fleetonly"],
    ] {
        let out = site.admin(&args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = site.admin(&["access", "allow-ip", "web_fleet", "127.0.0.0/8"]);
    assert!(!out.status.success(), "an address alone never logs in");
}

/// (status, headers) of a request made with curl.
fn curl(site: &Site, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["--silent", "--output", "/dev/null", "--dump-header", "-"])
        .args(["--write-out", "%{http_code}", "--cacert"])
        .arg(site.ca_file())
        .args(args)
        .arg(format!("{}{path}", site.url))
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = t
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    (status, t)
}

/// The login cookie a successful form login sets, as `name=value`.
fn login_cookie(site: &Site, user: &str, password: &str) -> Option<String> {
    let (status, headers) = curl(
        site,
        &[
            "--data-urlencode",
            &format!("user={user}"),
            "--data-urlencode",
            &format!("password={password}"),
        ],
        "/web/login",
    );
    let cookie = headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))?
        .to_string();
    assert_eq!(status, 303, "{headers}");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(cookie.starts_with("__Host-pd_session="), "{cookie}");
    cookie.split(';').next().map(str::to_string)
}

fn pages_refuse_without_a_login(site: &Site) {
    for path in ["/web/", "/web/clients", "/web/issues", "/web/clients/x"] {
        let (status, headers) = curl(site, &[], path);
        assert_eq!(status, 303, "{path}: {headers}");
        assert!(headers.contains("location: /web/login?next="), "{headers}");
        let forged = format!("Cookie: __Host-pd_session={}", "a".repeat(64));
        assert_eq!(
            curl(site, &["--header", &forged], path).0,
            303,
            "{path} with a made-up token"
        );
    }
    assert!(
        login_cookie(site, "auditor", "wrong").is_none(),
        "a wrong password logs in"
    );
    let fleet_only = login_cookie(site, "fleetonly", "web pass 2").unwrap();
    let with = |path| curl(site, &["--header", &format!("Cookie: {fleet_only}")], path).0;
    assert_eq!(with("/web/"), 200);
    assert_eq!(with("/web/clients"), 403, "fleetonly may not see clients");
    let (_, headers) = curl(
        site,
        &["--header", &format!("Cookie: {fleet_only}")],
        "/web/",
    );
    assert!(
        headers.contains("content-security-policy: default-src 'none'"),
        "{headers}"
    );
}

#[test]
fn the_web_view_in_a_browser() {
    let site = Site::init();
    let _server = site.start();
    seed(&site);
    users(&site);
    pages_refuse_without_a_login(&site);
    let driver = Driver::start();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(browse(&site, &driver));
}

async fn browse(site: &Site, driver: &Driver) {
    let b = browser(driver).await;
    let result = walk(site, &b).await;
    let _ = b.close().await;
    result
}

/// Waits up to 10 s for the browser to have loaded a URL that `want`
/// accepts (a form's navigation may still be under way when its click
/// returns).
async fn wait_for_url(b: &Client, want: impl Fn(&url::Url) -> bool) -> url::Url {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = b.current_url().await.unwrap();
        let ready = b
            .execute("return document.readyState", vec![])
            .await
            .unwrap();
        if want(&url) && ready == "complete" {
            return url;
        }
        assert!(Instant::now() < deadline, "the browser stayed at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn body_text(b: &Client) -> String {
    b.find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn walk(site: &Site, b: &Client) {
    // A page asked for without a login goes to the form and comes back.
    b.goto(&format!("{}/web/clients", site.url)).await.unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/web/login");
    snap(b, "login").await;
    let form = b.form(Locator::Css("form.login")).await.unwrap();
    form.set_by_name("user", "auditor").await.unwrap();
    form.set_by_name("password", "web pass 1").await.unwrap();
    form.submit().await.unwrap();
    wait_for_url(b, |u| u.path() == "/web/clients").await;

    // The hostile host name is text, in the table and nowhere else.
    let table = body_text(b).await;
    assert!(table.contains("3 clients match"), "{table}");
    assert!(table.contains(HOSTILE), "the name shows as text: {table}");
    assert_ne!(b.title().await.unwrap(), "owned");
    let scripts = b.find_all(Locator::Css("script, main img")).await.unwrap();
    assert!(
        scripts.is_empty(),
        "markup from a host name became elements"
    );
    snap(b, "clients").await;

    // Filter by name; the URL carries the filter.
    let form = b.form(Locator::Css("form.filters")).await.unwrap();
    form.set_by_name("q", "laptop").await.unwrap();
    form.submit().await.unwrap();
    wait_for_url(b, |u| u.query().unwrap_or_default().contains("q=laptop")).await;
    let rows = b
        .find_all(Locator::Css("table.clients tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    b.find(Locator::LinkText("laptop-07"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(b, |u| u.path().starts_with("/web/clients/")).await;

    // The client's disk-encryption answer and its issue.
    let disks = b
        .find(Locator::Css("#plugin-hd_encryption"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        disks.contains("encrypted") && disks.contains("false"),
        "{disks}"
    );
    let page = body_text(b).await;
    assert!(
        page.contains("disk-encryption") && page.contains("/ is not encrypted"),
        "{page}"
    );
    snap(b, "client").await;

    b.goto(&format!("{}/web/", site.url)).await.unwrap();
    let overview = body_text(b).await;
    assert!(
        overview.contains("3\nclients") || overview.contains("3 clients"),
        "{overview}"
    );
    assert!(
        b.find(Locator::Css("svg.trend polyline")).await.is_ok(),
        "the trend is drawn"
    );
    snap(b, "overview").await;

    b.goto(&format!("{}/web/issues", site.url)).await.unwrap();
    let issues = body_text(b).await;
    assert!(
        issues.contains("laptop-07") && issues.contains("disk-encryption"),
        "{issues}"
    );
    snap(b, "issues").await;

    // Logging out ends the login: the next page asks again.
    b.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(b, |u| u.path() == "/web/login").await;
    b.goto(&format!("{}/web/", site.url)).await.unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/web/login");
}

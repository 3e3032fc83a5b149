//! What the server's man pages say beyond their options: the files the
//! programs read and write, and the commands administrators start with.

use penguindome_protocol::cli_docs::ManSection;

const FILES: ManSection = ManSection {
    title: "FILES",
    items: &[
        (
            "/etc/penguindome/server.toml",
            "Listeners, store, limits, mail, web view; every key is annotated in \
             /usr/share/doc/penguindome-server/examples/server.toml (and agent.toml's \
             beside it). Reread on SIGHUP.",
        ),
        (
            "/etc/penguindome/access.toml",
            "Who may read the repositories, metrics and web pages: users, groups, address \
             rules. Reread within a second of a change.",
        ),
        (
            "/etc/penguindome/server-key.asc",
            "The server's OpenPGP key (mode 0600): signs every answer to an agent, the \
             repositories and the packages.",
        ),
        (
            "/etc/penguindome/tls/",
            "Each listener's certificate and key (NAME.crt, NAME.key; 0640, group penguindome).",
        ),
        (
            "/etc/penguindome/agent.toml",
            "What releases put in the site package: the address, certificate and key agents pin.",
        ),
        (
            "/var/lib/penguindome/",
            "The embedded store (penguindome.db) and the published repositories (repo/: \
             releases/ and the current link).",
        ),
    ],
};

/// The sections of `man penguindome-server`.
pub const SERVER: &[ManSection] = &[
    FILES,
    ManSection {
        title: "EXAMPLES",
        items: &[
            (
                "systemctl reload penguindome-server",
                "Reread server.toml: listeners added, removed or given a new certificate.",
            ),
            (
                "penguindome-server --check",
                "Check the configuration, the keys and the store, then exit.",
            ),
            ("journalctl -u penguindome-server", "What the server did."),
        ],
    },
];

/// The sections of `man pdome-admin`.
pub const ADMIN: &[ManSection] = &[
    FILES,
    ManSection {
        title: "EXAMPLES",
        items: &[
            (
                "pdome-admin init",
                "Make a site: keys, certificate, server.toml and agent.toml.",
            ),
            (
                "pdome-admin release",
                "Build the site's packages for apt, dnf and pacman and publish them as signed \
                 repositories.",
            ),
            (
                "pdome-admin tokens create --uses 20 --expires 7d",
                "An enrollment token and the one-line bootstrap for each distro family.",
            ),
            (
                "pdome-admin clients list",
                "Every client: host name, when it was last seen and what it last collected, \
                 its address and status.",
            ),
            (
                "pdome-admin issues list",
                "The open issues across the fleet (--closed for the history).",
            ),
            (
                "pdome-admin shell HOST",
                "Root's login shell on HOST, through the server, recorded.",
            ),
        ],
    },
];

//! The database schema and the migrations from older versions.

pub(super) const SCHEMA_VERSION: i64 = 7;

pub(super) const SCHEMA: &str = "
CREATE TABLE networks (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    bridge      TEXT NOT NULL UNIQUE,
    subnet      TEXT NOT NULL,
    gateway     TEXT NOT NULL,
    mtu         INTEGER NOT NULL,
    internal    INTEGER NOT NULL,
    masquerade  INTEGER NOT NULL,
    uplink      TEXT,
    xdp         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE endpoints (
    id          TEXT PRIMARY KEY,
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    ip          TEXT NOT NULL,
    mac         TEXT NOT NULL,
    ifname      TEXT NOT NULL,
    host_veth   TEXT NOT NULL UNIQUE,
    netns_path  TEXT NOT NULL,
    netns_dev   INTEGER NOT NULL,
    netns_ino   INTEGER NOT NULL,
    state       TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (network_id, ip)
);
CREATE TABLE ports (
    endpoint_id     TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    proto           TEXT NOT NULL,
    host_ip         TEXT NOT NULL,
    host_port       INTEGER NOT NULL,
    container_port  INTEGER NOT NULL,
    UNIQUE (proto, host_ip, host_port)
);
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
";

/// Version 2: a namespace's (device, inode) is handed to the next namespace as soon as it
/// dies, so endpoints also record the namespace's cookie (never reused within a boot) and the
/// boot it belongs to. Rows from version 1 keep 0 and '' and are matched by (device, inode).
pub(super) const MIGRATE_TO_2: &str = "
ALTER TABLE endpoints ADD COLUMN netns_cookie INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN netns_boot TEXT NOT NULL DEFAULT '';
";

/// Version 3, for engines that bring their own identifiers and move the container's side
/// themselves (Docker's remote driver): a network may record the engine's id for it; an
/// endpoint may be `handed` (its veth's container end was given to the engine, which moves,
/// names and addresses it); an engine may claim an endpoint's address and MAC before the
/// endpoint is wired; and the IPAM pools and addresses the engine requested from netpath are
/// recorded, so one allocator serves the engine and `netpath attach` alike.
pub(super) const MIGRATE_TO_3: &str = "
ALTER TABLE networks ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX networks_external_id ON networks(external_id);
ALTER TABLE endpoints ADD COLUMN handed INTEGER NOT NULL DEFAULT 0;
CREATE TABLE endpoint_claims (
    id          TEXT PRIMARY KEY,
    network_id  INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    ip          TEXT NOT NULL,
    mac         TEXT NOT NULL
);
CREATE TABLE ipam_pools (
    pool        TEXT PRIMARY KEY
);
CREATE TABLE ipam_addresses (
    pool        TEXT NOT NULL REFERENCES ipam_pools(pool) ON DELETE CASCADE,
    ip          TEXT NOT NULL,
    PRIMARY KEY (pool, ip)
);
";

/// Version 4: every endpoint owns a counter slot (its index in the `ENDPOINT_COUNTERS` array),
/// unique across networks. Existing endpoints are numbered in the order they were made.
pub(super) const MIGRATE_TO_4: &str = "
ALTER TABLE endpoints ADD COLUMN slot INTEGER NOT NULL DEFAULT 0;
UPDATE endpoints SET slot = (SELECT COUNT(*) FROM endpoints older WHERE older.rowid < endpoints.rowid);
CREATE UNIQUE INDEX endpoints_slot ON endpoints(slot);
";

/// Version 5, the columns dual-stack networks need: a network's IPv6 subnet and gateway, an
/// endpoint's (and an engine's claim's) IPv6 address, unique per network as the IPv4 one is.
/// Every existing row is IPv4 only and keeps NULL.
pub(super) const MIGRATE_TO_5: &str = "
ALTER TABLE networks ADD COLUMN subnet6 TEXT;
ALTER TABLE networks ADD COLUMN gateway6 TEXT;
ALTER TABLE endpoints ADD COLUMN ip6 TEXT;
CREATE UNIQUE INDEX endpoints_ip6 ON endpoints(network_id, ip6);
ALTER TABLE endpoint_claims ADD COLUMN ip6 TEXT;
";

/// Version 6: who asked for an endpoint (`cli`, `cni`, `oci`, `engine`), so that a runtime's
/// GC releases only the endpoints it made. Existing rows keep NULL: nothing says who made
/// them, so no runtime collects them (`netpath gc` still releases them when their namespace
/// dies).
pub(super) const MIGRATE_TO_6: &str = "
ALTER TABLE endpoints ADD COLUMN creator TEXT;
";

/// Version 7: the names a container answers to on its network, for the resolver to serve.
/// An endpoint may have one name, unique on its network (whatever its case, as in DNS), and
/// aliases, which several endpoints may share (the resolver answers with all of them). The
/// index backs up the check `reserve_endpoint` makes in its transaction. Existing endpoints
/// keep NULL and no aliases: nothing named them.
pub(super) const MIGRATE_TO_7: &str = "
ALTER TABLE endpoints ADD COLUMN name TEXT COLLATE NOCASE;
CREATE UNIQUE INDEX endpoints_name ON endpoints(network_id, name);
CREATE TABLE endpoint_aliases (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    alias       TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (endpoint_id, alias)
);
CREATE INDEX endpoint_aliases_alias ON endpoint_aliases(alias);
";

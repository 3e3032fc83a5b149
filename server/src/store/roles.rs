//! The storage interface, split by who uses it, so that each caller depends
//! only on what it calls:
//!
//! - [`RequestStore`]: the HTTP handlers and the nonce housekeeping;
//! - [`AdminStore`]: `pdome-admin clients` and its parameters;
//! - [`AuditStore`]: the issues audit and `pdome-admin issues`;
//! - [`MigrationStore`]: `pdome-admin store migrate`;
//! - [`FleetStore`]: counts over the whole fleet, for `/metrics`.
//!
//! Every role reaches [`StoreBase`]; [`Store`] is all of them, for the code
//! that opens a store and hands it out.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use penguindome_protocol::actions::ActionReport;

use super::diff::Change;
use super::{
    ActionFilter, ActionRecord, AuditRecord, AuditRow, ClientDocument, ClientPage, ClientQuery,
    ClientSummary, Delivered, EnrollOutcome, Enrollment, FleetSummary, Issue, IssueFilter,
    IssueSpan, KeyRecord, Kind, NewAction, NewToken, Parameter, Record, RequestMeta, Rewritten,
    StoreResult, Submission, SubmitOutcome, TokenRecord, ValueRewrite,
};

/// What every role needs: the backend's name, its health, and closing.
#[async_trait]
pub trait StoreBase: Send + Sync + 'static {
    /// Short backend name for logs and health output.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers.
    async fn health(&self) -> StoreResult<()>;

    /// Finishes pending writes and closes.
    async fn close(&self);
}

/// What client requests do: every write here checks the key and consumes
/// the request's nonce in the same atomic unit.
#[async_trait]
pub trait RequestStore: StoreBase {
    /// Looks up an enrolled key by fingerprint.
    async fn find_key(&self, fingerprint: &str) -> StoreResult<Option<KeyRecord>>;

    /// Enrolls a client key (credential already checked by the caller).
    async fn enroll(&self, e: Enrollment) -> StoreResult<EnrollOutcome>;

    /// Records an authenticated request that carries no data: consumes the
    /// nonce, refuses revoked keys, updates last contact.
    async fn touch(&self, meta: RequestMeta) -> StoreResult<()>;

    /// Stores a report durably, with its audit records.
    async fn submit(&self, s: Submission) -> StoreResult<SubmitOutcome>;

    /// An update request: records it as [`RequestStore::touch`] does and
    /// hands out the client's actions in the same write. Those queued and
    /// unexpired become delivered (no longer cancellable); every delivered,
    /// unexpired one not yet reported on is returned, oldest first, with
    /// whether the client lacks a repository password.
    async fn deliver_actions(
        &self,
        meta: RequestMeta,
        now: DateTime<Utc>,
    ) -> StoreResult<Delivered>;

    /// Stores where an action stands on the requesting client, with an
    /// audit record, consuming the nonce. A state already final stays (a
    /// repeated report is answered as stored); an action not addressed to
    /// the client is `NoSuchAction`.
    async fn report_action(&self, meta: RequestMeta, report: ActionReport) -> StoreResult<()>;

    /// Forgets nonces whose window has passed. Returns how many.
    async fn prune_nonces(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// An enrollment token, for the repositories the bootstrap fetches.
    async fn find_token(&self, id: &str) -> StoreResult<Option<TokenRecord>>;

    /// The SHA-256 (hex) of a client's repository password; `None` when it
    /// has none or is revoked, so revocation closes the repositories too.
    async fn repo_credential(&self, client_id: &str) -> StoreResult<Option<String>>;

    /// A signed request for a new repository password: records it as
    /// [`RequestStore::touch`] does and replaces the stored hash in the
    /// same write.
    async fn set_repo_credential(&self, meta: RequestMeta, sha256: String) -> StoreResult<()>;
}

/// What administrators read and change about clients.
#[async_trait]
pub trait AdminStore: StoreBase {
    /// All clients, ordered by host name.
    async fn list_clients(&self) -> StoreResult<Vec<ClientSummary>>;

    /// Resolves a client id or host name to one client id.
    async fn resolve_client(&self, selector: &str) -> StoreResult<String>;

    /// One client's whole document.
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientDocument>>;

    /// Audit records of a client, oldest first, at most `limit` newest.
    async fn audit_trail(&self, client_id: &str, limit: usize) -> StoreResult<Vec<AuditRecord>>;

    /// Revokes every key of a client. Returns false if it was already revoked.
    async fn revoke_client(&self, client_id: &str, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Lets a client enroll a new key once (after a reinstall or revocation).
    async fn allow_reenroll(&self, client_id: &str) -> StoreResult<()>;

    /// Queues an action for its clients, with an audit record on each.
    async fn add_action(&self, a: NewAction) -> StoreResult<()>;

    /// Actions matching `filter`, oldest first, with their targets.
    async fn actions(&self, filter: ActionFilter) -> StoreResult<Vec<ActionRecord>>;

    /// Cancels an action on the clients it was not handed to yet, with an
    /// audit record on each. Returns the clients where it was cancelled.
    async fn cancel_action(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;

    /// Sets a client parameter, or removes it when `value` is null.
    async fn put_parameter(&self, p: Parameter) -> StoreResult<()>;

    /// Parameters of one client or of all, ordered by client and name.
    async fn parameters(&self, client_id: Option<&str>) -> StoreResult<Vec<Parameter>>;

    /// Stores a new enrollment token.
    async fn add_token(&self, t: NewToken) -> StoreResult<()>;

    /// Every enrollment token, newest first.
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Revokes a token; false when unknown or revoked already.
    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Forgets these clients' repository passwords: they are refused at
    /// once and ask for new ones at their next update. Returns how many
    /// had one.
    async fn clear_repo_credentials(&self, client_ids: Vec<String>) -> StoreResult<u64>;

    /// Passes every client's plugin outputs and every audit record's values
    /// through `rewrite` and stores what it changed; then makes sure the
    /// replaced values are gone from the database's files too (SQLite:
    /// VACUUM and a truncated WAL). Digests of rewritten outputs are
    /// recomputed and stored verdicts dropped, as both were made from the
    /// old text.
    async fn rewrite_values(&self, rewrite: ValueRewrite) -> StoreResult<Rewritten>;

    /// Appends a record of something an administrator did on a client
    /// (read its sealed fields) to its audit trail.
    async fn note_on_audit_trail(
        &self,
        client_id: &str,
        hostname: &str,
        change: Change,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
}

/// The issues audit: it reads what administration reads (clients and their
/// parameters) and the patch queue, and keeps issues under a lease. Its
/// `pdome-admin issues` commands also resolve hosts and set parameters,
/// hence administration as a supertrait.
#[async_trait]
pub trait AuditStore: AdminStore {
    /// Writes issues, replacing those with the same id (all or none).
    async fn put_issues(&self, issues: Vec<Issue>) -> StoreResult<()>;

    /// Issues, ordered by client, then opening time.
    async fn issues(&self, filter: IssueFilter) -> StoreResult<Vec<Issue>>;

    /// Takes or renews the lease `name` for `holder` until `until`, unless
    /// another holder's lease is still valid at `now`. Returns whether
    /// `holder` has it. Serialises work that several servers sharing one
    /// database must not do at once (the issues audit).
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Gives back a lease `holder` has (nothing if it does not).
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;

    /// Every client as the periodic audit needs it, by host name, as a
    /// stream: the audit's memory does not grow with the fleet.
    async fn audit_rows(&self) -> StoreResult<AuditRows>;

    /// How many patches each client has not finished (queued, delivered or
    /// started, and not expired at `now`), for clients with any.
    async fn pending_patch_counts(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<std::collections::HashMap<String, usize>>;
}

/// The clients' rows for the audit, read as they are used.
pub type AuditRows = futures_util::stream::BoxStream<'static, StoreResult<AuditRow>>;

/// Copying everything between stores.
#[async_trait]
pub trait MigrationStore: StoreBase {
    /// How many records of a kind the store holds.
    async fn count(&self, kind: Kind) -> StoreResult<u64>;

    /// Up to `limit` records of a kind after the cursor `after`, in a stable
    /// order (audit records oldest first); each with its cursor.
    async fn export(
        &self,
        kind: Kind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Record)>>;

    /// Writes records exported from another store (of one kind, in order).
    async fn import(&self, records: Vec<Record>) -> StoreResult<()>;

    /// Deletes everything (migration targets, with --force).
    async fn clear(&self) -> StoreResult<()>;
}

/// Counts over the whole fleet, answered by the database (not by reading
/// every client), for `/metrics`.
#[async_trait]
pub trait FleetStore: StoreBase {
    /// Clients enrolled and revoked, how many enrolled ones were last seen
    /// within each of [`super::SEEN_WINDOWS`] before `now`, and open issues
    /// by check.
    async fn fleet_summary(&self, now: DateTime<Utc>) -> StoreResult<FleetSummary>;

    /// One page of the clients matching `query`, with the total.
    async fn client_page(&self, query: ClientQuery) -> StoreResult<ClientPage>;

    /// Issues open at some time since `since` (still open, or closed after
    /// it), for drawing how many were open each day.
    async fn issue_spans(&self, since: DateTime<Utc>) -> StoreResult<Vec<IssueSpan>>;

    /// The host names of those of `ids` that are clients.
    async fn hostnames(
        &self,
        ids: Vec<String>,
    ) -> StoreResult<std::collections::HashMap<String, String>>;
}

/// Every role: what a backend implements, and what start-up hands out.
pub trait Store: RequestStore + AuditStore + MigrationStore + FleetStore {}

impl<T: RequestStore + AuditStore + MigrationStore + FleetStore> Store for T {}

//! Which server holds a waiting session. Behind a balancer the agent's
//! connection may reach any server of the site, while the administrator
//! waits on the one they opened the session on; that server records
//! itself here (its `[shell] peer_url`) until the agent arrives or the
//! wait ends, and the others pass the agent's connection on to it.

use chrono::{DateTime, Utc};

use crate::store::StoreResult;

/// Where sessions are held: nowhere to look on a single server, in the
/// database the servers of a site share otherwise.
#[async_trait::async_trait]
pub trait ShellRoutes: Send + Sync + 'static {
    /// Records that the server at `holder` waits for `session_id`'s agent
    /// until `until`; durable before it returns (the agent is told of the
    /// session only after).
    async fn hold(&self, session_id: &str, holder: &str, until: DateTime<Utc>) -> StoreResult<()>;

    /// The URL of the server waiting for `session_id`'s agent, while it
    /// waits.
    async fn holder(&self, session_id: &str) -> StoreResult<Option<String>>;

    /// Forgets `session_id` (its agent arrived, or the wait ended).
    async fn release(&self, session_id: &str) -> StoreResult<()>;
}

/// One server: every session is held by this process.
pub struct LocalRoutes;

#[async_trait::async_trait]
impl ShellRoutes for LocalRoutes {
    async fn hold(&self, _: &str, _: &str, _: DateTime<Utc>) -> StoreResult<()> {
        Ok(())
    }

    async fn holder(&self, _: &str) -> StoreResult<Option<String>> {
        Ok(None)
    }

    async fn release(&self, _: &str) -> StoreResult<()> {
        Ok(())
    }
}

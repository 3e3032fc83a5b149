//! Web logins in the database (`web_sessions`), so that a login made
//! through one server of a site is good on every server behind its
//! balancer, and a logout ends it on all of them. A document per login:
//! `_id` is the hex SHA-256 of the token (the token itself is never
//! stored), with the user and when the login began, was last used and
//! expires. Expired logins are deleted as new ones are made.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::{Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

use super::db_err;
use super::fields::{from_bson_date, to_bson_date};
use crate::store::{StoreError, StoreResult};
use crate::web::session::{SessionStore, digest, new_token};

/// A use is written back at most this often (an idle timeout counted in
/// minutes needs no more, and a page view then costs one read).
const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// The logins of a site, shared by its servers.
pub struct MongoSessions {
    sessions: Collection<Document>,
    write_concern: WriteConcern,
    target: String,
    lifetime: Duration,
    idle: Duration,
}

impl MongoSessions {
    pub(super) fn new(
        db: &Database,
        write_concern: WriteConcern,
        target: String,
        lifetime: Duration,
        idle: Duration,
    ) -> Self {
        Self {
            sessions: db.collection("web_sessions"),
            write_concern,
            target,
            lifetime,
            idle,
        }
    }

    fn err(&self, e: mongodb::error::Error) -> StoreError {
        db_err(&self.target, e)
    }

    fn id(token: &str) -> String {
        hex::encode(digest(token))
    }
}

fn date(d: &Document, key: &str) -> Option<DateTime<Utc>> {
    from_bson_date(d.get(key))
}

fn after(t: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(span).unwrap_or(chrono::Duration::MAX)
}

#[async_trait::async_trait]
impl SessionStore for MongoSessions {
    fn lifetime(&self) -> Duration {
        self.lifetime
    }

    async fn create(&self, user: &str) -> StoreResult<String> {
        let now = Utc::now();
        self.sessions
            .delete_many(doc! {"expires_at": {"$lte": to_bson_date(&now)}})
            .await
            .map_err(|e| self.err(e))?;
        let token = new_token();
        let login = doc! {
            "_id": Self::id(&token),
            "user": user,
            "created_at": to_bson_date(&now),
            "used_at": to_bson_date(&now),
            "expires_at": to_bson_date(&after(now, self.lifetime)),
        };
        self.sessions
            .insert_one(login)
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(token)
    }

    async fn user(&self, token: &str) -> StoreResult<Option<String>> {
        let id = Self::id(token);
        let Some(found) = self
            .sessions
            .find_one(doc! {"_id": &id})
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let now = Utc::now();
        let (Some(created), Some(used)) = (date(&found, "created_at"), date(&found, "used_at"))
        else {
            return Ok(None);
        };
        if after(created, self.lifetime) <= now || after(used, self.idle) <= now {
            self.end(token).await?;
            return Ok(None);
        }
        if after(used, TOUCH_EVERY.min(self.idle / 4)) <= now {
            self.sessions
                .update_one(
                    doc! {"_id": &id},
                    doc! {"$set": {"used_at": to_bson_date(&now)}},
                )
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(found.get_str("user").ok().map(str::to_string))
    }

    async fn end(&self, token: &str) -> StoreResult<()> {
        self.sessions
            .delete_one(doc! {"_id": Self::id(token)})
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::StoreBase;
    use crate::store::mongodb::tests::{fresh_store, test_uri};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logins_in_the_database_end_when_idle_or_old_or_ended() {
        let Some(uri) = test_uri() else { return };
        let store = fresh_store(&uri).await;
        crate::web::session::conformance(|lifetime, idle| Arc::new(store.sessions(lifetime, idle)))
            .await;
        store.drop_database().await.unwrap();
        store.close().await;
    }
}

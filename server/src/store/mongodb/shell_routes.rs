//! Waiting shell sessions by holder (`shell_routes`), so that an agent's
//! connection reaching any server of the site is passed on to the server
//! the administrator waits on. A document per waiting session: `_id` is
//! the session id, with the holder's URL and when the wait ends. Lapsed
//! ones are deleted as new ones are recorded, and never answered.

use chrono::{DateTime, Utc};
use mongodb::bson::{Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

use super::db_err;
use super::fields::{from_bson_date, to_bson_date};
use crate::shell::routes::ShellRoutes;
use crate::store::{StoreError, StoreResult};

/// The waiting sessions of a site, shared by its servers.
pub struct MongoShellRoutes {
    routes: Collection<Document>,
    write_concern: WriteConcern,
    target: String,
}

impl MongoShellRoutes {
    pub(super) fn new(db: &Database, write_concern: WriteConcern, target: String) -> Self {
        Self {
            routes: db.collection("shell_routes"),
            write_concern,
            target,
        }
    }

    fn err(&self, e: mongodb::error::Error) -> StoreError {
        db_err(&self.target, e)
    }
}

#[async_trait::async_trait]
impl ShellRoutes for MongoShellRoutes {
    async fn hold(&self, session_id: &str, holder: &str, until: DateTime<Utc>) -> StoreResult<()> {
        let now = Utc::now();
        self.routes
            .delete_many(doc! {"until": {"$lte": to_bson_date(&now)}})
            .await
            .map_err(|e| self.err(e))?;
        let route = doc! {
            "_id": session_id,
            "holder": holder,
            "until": to_bson_date(&until),
        };
        self.routes
            .insert_one(route)
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn holder(&self, session_id: &str) -> StoreResult<Option<String>> {
        let found = self
            .routes
            .find_one(doc! {"_id": session_id})
            .await
            .map_err(|e| self.err(e))?;
        let Some(found) = found else {
            return Ok(None);
        };
        let waiting = from_bson_date(found.get("until")).is_some_and(|until| until > Utc::now());
        Ok(found
            .get_str("holder")
            .ok()
            .filter(|_| waiting)
            .map(str::to_string))
    }

    async fn release(&self, session_id: &str) -> StoreResult<()> {
        self.routes
            .delete_one(doc! {"_id": session_id})
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

//! `pending-patches`: patches queued for the client and never applied.

use super::{Check, Context, Facts, Finding};

/// The client has not acknowledged its patches.
pub struct PendingPatches;

impl Check for PendingPatches {
    fn name(&self) -> &'static str {
        "pending-patches"
    }

    fn describe(&self) -> &'static str {
        "patches queued for the client have not been applied"
    }

    fn default_grace(&self) -> &'static str {
        "4h"
    }

    fn decided_by_report(&self) -> bool {
        false
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        match facts.pending_patches {
            0 => Finding::Clear,
            n => Finding::Raise(format!("{n} patch(es) not applied")),
        }
    }
}

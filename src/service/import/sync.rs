//! A sync's last step: the account's users the file did not name are
//! deactivated.

use std::collections::HashMap;

use uuid::Uuid;

use super::{outcome::Outcome, Import};
use crate::{
    domain::{
        import::{ImportWrite, LineStatus},
        Error,
    },
    service::not_admin_everywhere,
    store::Tx,
};

impl Import {
    /// Deactivates the account's users the file did not name, unless that is
    /// more than 20 % of them and the import is not forced.
    pub async fn finish_sync(&mut self, tx: &mut Tx) -> Result<Vec<Outcome>, Error> {
        let report = self.ledger()?;
        tx.hold_report(report).await?;
        let absent = tx
            .absent_users(self.account.id, report, self.actor.user_id)
            .await?;
        let count = absent.users.len() as i64;
        if count > 0 && count * 5 > absent.live && !self.options.force {
            return Err(Error::FailedPrecondition(format!(
                "sync would deactivate {count} of the account's {} users (more than 20 %); nothing was deactivated; import with force to do it",
                absent.live
            )));
        }
        // Deactivating changes the user on every account: the actor must
        // administer all of them (as for a status change), checked for the
        // whole list in one query and written in one statement per table.
        let beyond: HashMap<Uuid, Vec<String>> = if self.actor.is_operator() {
            HashMap::new()
        } else {
            tx.accounts_not_administered(&absent.users, self.actor.user_id)
                .await?
                .into_iter()
                .collect()
        };
        let mut out = Vec::with_capacity(absent.users.len());
        let mut writes = Vec::new();
        for id in absent.users {
            if let Some(codes) = beyond.get(&id) {
                out.push(Outcome {
                    user_id: Some(id),
                    ..Outcome::invalid_data(
                        0,
                        "",
                        format!("absent, not deactivated: {}", not_admin_everywhere(codes)),
                    )
                });
                continue;
            }
            writes.push(ImportWrite::Deactivate { id });
            out.push(Outcome::done(0, LineStatus::Deactivated, id));
        }
        let all: Vec<&ImportWrite> = writes.iter().collect();
        tx.write_import(&self.account, &all, &Default::default())
            .await?;
        Ok(out)
    }
}

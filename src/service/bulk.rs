//! What a CSV export or template covers, for a given actor.

use uuid::Uuid;

use crate::domain::team::TeamFilter;

use crate::{
    domain::{
        account::AccountCode,
        principal::Actor,
        rights::{Authority, RightDef},
        Error,
    },
    store::Store,
};

/// What an export is of.
#[derive(Debug, Clone)]
pub enum ExportOf {
    Account(AccountCode),
    Organization(Uuid),
}

/// The accounts an export covers, in code order, and the catalog (its right
/// columns). An
/// admin exports only accounts he administers; an organization export by a
/// non-operator covers the organization's accounts he administers, and is
/// refused when there are none.
pub async fn export_scope(
    store: &Store,
    actor: &Actor,
    of: &ExportOf,
    team: Option<&TeamFilter>,
) -> Result<ExportScope, Error> {
    let mut tx = store.read().await?;
    let (organization, accounts) = match of {
        ExportOf::Account(code) => {
            let account = tx.account(code.as_str()).await?;
            tx.authority(actor, account.id)
                .await?
                .require_admin(&account.code)?;
            (account.organization_id, vec![account.id])
        }
        ExportOf::Organization(org) => (*org, {
            if !tx.organization_exists(*org).await? {
                return Err(Error::NotFound(format!("organization {org}")));
            }
            let all = tx.accounts_of_organization(*org).await?;
            // `accounts_of_organization` returns them in code order.
            if actor.is_operator() {
                all.into_iter().map(|(id, _)| id).collect()
            } else {
                let mine = tx.administered_accounts(actor.user_id).await?;
                let ids: Vec<Uuid> = all
                    .into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| mine.contains(id))
                    .collect();
                if ids.is_empty() {
                    return Err(Error::PermissionDenied(format!(
                        "admin.users on an account of organization {org} is required"
                    )));
                }
                ids
            }
        }),
    };
    let teams = match team {
        Some(f) => Some(super::teams::resolve_filter(&mut tx, organization, f).await?),
        None => None,
    };
    let catalog = tx.rights().await?;
    tx.commit().await?;
    Ok(ExportScope {
        accounts,
        teams,
        catalog,
    })
}

/// What an export covers: its accounts (in code order), the teams whose
/// members it is restricted to, and the catalog (its right columns).
pub struct ExportScope {
    pub accounts: Vec<Uuid>,
    pub teams: Option<Vec<Uuid>>,
    pub catalog: Vec<RightDef>,
}

/// The rights an import template offers on an account: those the actor may
/// delegate there (everything for an operator), with the scope he holds.
pub async fn template_rights(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
) -> Result<Vec<(RightDef, Option<crate::domain::rights::Scope>)>, Error> {
    let mut tx = store.read().await?;
    let a = tx.account(account.as_str()).await?;
    let authority = tx.authority(actor, a.id).await?;
    authority.require_admin(&a.code)?;
    let catalog = tx.rights().await?;
    tx.commit().await?;
    Ok(catalog
        .into_iter()
        .filter_map(|def| match &authority {
            Authority::Operator => {
                let scope = def
                    .scoped
                    .then_some(crate::domain::rights::Scope::Consolidated);
                Some((def, scope))
            }
            Authority::Holder(held) => {
                let h = held.iter().find(|h| h.right == def.code)?;
                let scope = h.scope;
                Some((def, scope))
            }
        })
        .collect())
}

//! Organizations and accounts: operators only.

use crate::{
    domain::{
        account::{
            Account, AccountChanges, AccountCode, AccountFilter, DisplayName, NewAccount,
            Organization,
        },
        principal::Actor,
        request::RequestKey,
        Error,
    },
    store::Store,
};

/// Creates an organization, or returns the one an earlier call with the
/// same request created.
pub async fn create_organization(
    store: &Store,
    actor: &Actor,
    display_name: &DisplayName,
    request: Option<&RequestKey>,
) -> Result<Organization, Error> {
    actor.require_operator()?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    if let Some(key) = request {
        if let Some((id, _)) = tx.replayed(key).await? {
            let org = tx.organization(id).await?;
            tx.rollback().await?;
            return Ok(org);
        }
    }
    let org = tx.insert_organization(display_name).await?;
    if let Some(key) = request {
        tx.record_request(key, org.id).await?;
    }
    tx.commit().await?;
    Ok(org)
}

/// Creates an account, or returns the one an earlier call with the same
/// request created.
pub async fn create_account(
    store: &Store,
    actor: &Actor,
    new: &NewAccount,
) -> Result<Account, Error> {
    actor.require_operator()?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    if let Some(key) = &new.request {
        if let Some((id, _)) = tx.replayed(key).await? {
            let account = tx.account_by_id(id).await?;
            tx.rollback().await?;
            return Ok(account);
        }
    }
    let account = tx.insert_account(new).await?;
    if let Some(key) = &new.request {
        tx.record_request(key, account.id).await?;
    }
    tx.commit().await?;
    Ok(account)
}

pub async fn get(store: &Store, actor: &Actor, code: &AccountCode) -> Result<Account, Error> {
    actor.require_operator()?;
    let mut tx = store.read().await?;
    let account = tx.account(code.as_str()).await?;
    tx.commit().await?;
    Ok(account)
}

/// One page of accounts in code order.
pub async fn list(
    store: &Store,
    actor: &Actor,
    filter: &AccountFilter,
) -> Result<Vec<Account>, Error> {
    actor.require_operator()?;
    let mut tx = store.read().await?;
    let accounts = tx.list_accounts(filter).await?;
    tx.commit().await?;
    Ok(accounts)
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    code: &AccountCode,
    changes: &AccountChanges,
) -> Result<Account, Error> {
    actor.require_operator()?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    let account = tx.update_account(code.as_str(), changes).await?;
    let mut summary = Vec::new();
    if let Some(name) = &changes.display_name {
        summary.push(format!("display_name={:?}", name.as_str()));
    }
    if let Some(status) = changes.status {
        summary.push(format!("status={}", status.as_str()));
    }
    tx.commit().await?;
    Ok(account)
}

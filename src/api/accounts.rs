//! `clef.v1.AccountService`.

use data_encoding::BASE64URL_NOPAD;
use tonic::{Request, Response, Status};

use super::{auth::Authenticator, convert::request_key, timestamp};
use crate::{
    domain::{
        account::{
            parse_id, Account, AccountChanges, AccountCode, AccountFilter, AccountStatus,
            DisplayName, NewAccount, Organization,
        },
        Error, Violations,
    },
    pb::{self, account_service_server::AccountService},
    service::accounts,
    store::Store,
};

const DEFAULT_PAGE_SIZE: i64 = 100;
const MAX_PAGE_SIZE: i64 = 1000;

/// Serves `clef.v1.AccountService`.
#[derive(Debug, Clone)]
pub struct AccountApi {
    store: Store,
    auth: Authenticator,
}

impl AccountApi {
    pub fn new(store: Store, auth: Authenticator) -> Self {
        Self { store, auth }
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let actor = self.auth.actor(&request).await?;
        actor.require_operator()?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let name = v.check("display_name", DisplayName::parse(&req.display_name));
        let request = request_key("CreateOrganization", &req, |r| &mut r.request_id, &mut v);
        v.finish()?;
        let Some(name) = name else {
            return Err(Error::Internal("validation inconsistency".into()).into());
        };
        let org =
            accounts::create_organization(&self.store, &actor, &name, request.as_ref()).await?;
        Ok(Response::new(organization_to_pb(org)))
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let actor = self.auth.actor(&request).await?;
        actor.require_operator()?;
        let req = request.into_inner();
        let new = parse_new_account(&req)?;
        let account = accounts::create_account(&self.store, &actor, &new).await?;
        Ok(Response::new(account_to_pb(account)))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let actor = self.auth.actor(&request).await?;
        actor.require_operator()?;
        let code = AccountCode::parse(&request.get_ref().code)
            .map_err(|why| Error::invalid("code", why))?;
        let account = accounts::get(&self.store, &actor, &code).await?;
        Ok(Response::new(account_to_pb(account)))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let actor = self.auth.actor(&request).await?;
        actor.require_operator()?;
        let req = request.into_inner();
        let filter = parse_account_filter(&req)?;
        let page_size = filter.limit;
        // One extra row tells whether another page follows.
        let filter = AccountFilter {
            limit: page_size + 1,
            ..filter
        };
        let mut accounts = accounts::list(&self.store, &actor, &filter).await?;
        let next_page_token = if accounts.len() as i64 > page_size {
            accounts.truncate(page_size as usize);
            accounts
                .last()
                .map(|a| BASE64URL_NOPAD.encode(a.code.as_bytes()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: accounts.into_iter().map(account_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let actor = self.auth.actor(&request).await?;
        actor.require_operator()?;
        let req = request.into_inner();
        let (code, changes) = parse_account_update(&req)?;
        let account = accounts::update(&self.store, &actor, &code, &changes).await?;
        Ok(Response::new(account_to_pb(account)))
    }
}

fn parse_new_account(req: &pb::CreateAccountRequest) -> Result<NewAccount, Error> {
    let mut v = Violations::default();
    let Some(account) = &req.account else {
        return Err(Error::invalid("account", "is required"));
    };
    let code = v.check("account.code", AccountCode::parse(&account.code));
    let display_name = v.check(
        "account.display_name",
        DisplayName::parse(&account.display_name),
    );
    let organization_id = v.check(
        "account.organization_id",
        parse_id(&account.organization_id),
    );
    let status = match pb::AccountStatus::try_from(account.status) {
        Ok(pb::AccountStatus::Unspecified) | Ok(pb::AccountStatus::Active) => {
            Some(AccountStatus::Active)
        }
        Ok(pb::AccountStatus::Closed) => Some(AccountStatus::Closed),
        Err(_) => v.check(
            "account.status",
            Err(format!("unknown status {}", account.status)),
        ),
    };
    let request = request_key("CreateAccount", req, |r| &mut r.request_id, &mut v);
    v.finish()?;
    match (code, display_name, organization_id, status) {
        (Some(code), Some(display_name), Some(organization_id), Some(status)) => Ok(NewAccount {
            code,
            organization_id,
            display_name,
            status,
            request,
        }),
        _ => Err(Error::Internal("validation inconsistency".into())),
    }
}

fn parse_account_filter(req: &pb::ListAccountsRequest) -> Result<AccountFilter, Error> {
    let mut v = Violations::default();
    let organization_id = if req.organization_id.is_empty() {
        None
    } else {
        v.check("organization_id", parse_id(&req.organization_id))
    };
    if req.code_prefix.len() > 32 {
        v.add("code_prefix", "must be at most 32 characters");
    }
    let limit = match i64::from(req.page_size) {
        0 => DEFAULT_PAGE_SIZE,
        n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        n => {
            v.add(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}, got {n}"),
            );
            DEFAULT_PAGE_SIZE
        }
    };
    let after = if req.page_token.is_empty() {
        None
    } else {
        v.check(
            "page_token",
            BASE64URL_NOPAD
                .decode(req.page_token.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| "is not a token returned by ListAccounts".to_owned()),
        )
    };
    v.finish()?;
    Ok(AccountFilter {
        organization_id,
        code_prefix: req.code_prefix.clone(),
        after,
        limit,
    })
}

fn parse_account_update(
    req: &pb::UpdateAccountRequest,
) -> Result<(AccountCode, AccountChanges), Error> {
    let Some(account) = &req.account else {
        return Err(Error::invalid("account", "is required"));
    };
    let mut v = Violations::default();
    let code = v.check("account.code", AccountCode::parse(&account.code));
    let paths: Vec<String> = match &req.update_mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths.clone(),
        _ => {
            let mut implied = Vec::new();
            if !account.display_name.is_empty() {
                implied.push("display_name".to_owned());
            }
            if account.status != 0 {
                implied.push("status".to_owned());
            }
            implied
        }
    };
    if paths.is_empty() {
        v.add(
            "update_mask",
            "names no field to update (allowed: display_name, status)",
        );
    }
    let mut changes = AccountChanges::default();
    for path in &paths {
        match path.as_str() {
            "display_name" => {
                changes.display_name = v.check(
                    "account.display_name",
                    DisplayName::parse(&account.display_name),
                );
            }
            "status" => {
                changes.status = match pb::AccountStatus::try_from(account.status) {
                    Ok(pb::AccountStatus::Active) => Some(AccountStatus::Active),
                    Ok(pb::AccountStatus::Closed) => Some(AccountStatus::Closed),
                    _ => v.check(
                        "account.status",
                        Err("must be ACCOUNT_STATUS_ACTIVE or ACCOUNT_STATUS_CLOSED".into()),
                    ),
                };
            }
            "code" | "organization_id" | "create_time" | "update_time" | "revision" => {
                v.add("update_mask", format!("{path} cannot be changed"));
            }
            other => v.add(
                "update_mask",
                format!("unknown field {other:?} (allowed: display_name, status)"),
            ),
        }
    }
    v.finish()?;
    let code = code.ok_or_else(|| Error::Internal("validation inconsistency".into()))?;
    Ok((code, changes))
}

fn organization_to_pb(o: Organization) -> pb::Organization {
    pb::Organization {
        id: o.id.to_string(),
        display_name: o.display_name,
        create_time: timestamp(o.created_at),
        update_time: timestamp(o.updated_at),
        revision: o.revision,
    }
}

fn account_to_pb(a: Account) -> pb::Account {
    pb::Account {
        code: a.code,
        display_name: a.display_name,
        organization_id: a.organization_id.to_string(),
        status: match a.status {
            AccountStatus::Active => pb::AccountStatus::Active,
            AccountStatus::Closed => pb::AccountStatus::Closed,
        } as i32,
        create_time: timestamp(a.created_at),
        update_time: timestamp(a.updated_at),
        revision: a.revision,
    }
}

//! `clef.v1.ImportService`.

use tonic::{Request, Response, Status};

use super::{
    convert::{code, done},
    Ctx,
};
use crate::{
    bulk::{csvfile::neutralise, Dialect, PROFILE_COLUMNS},
    domain::{Error, Violations},
    pb::{self, import_service_server::ImportService},
    service::bulk::template_rights,
};

/// Serves `clef.v1.ImportService`.
#[derive(Debug, Clone)]
pub struct ImportApi(pub Ctx);

#[tonic::async_trait]
impl ImportService for ImportApi {
    async fn get_import_template(
        &self,
        request: Request<pb::GetImportTemplateRequest>,
    ) -> Result<Response<pb::GetImportTemplateResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &req.account_code, &mut v);
        let account = done(v, account)?;
        let rights = template_rights(&self.0.store, &actor, &account).await?;
        let dialect = if req.excel {
            Dialect::Excel
        } else {
            Dialect::Rfc4180
        };
        let mut header: Vec<String> = PROFILE_COLUMNS
            .iter()
            .map(|(_, fr, _)| fr.to_string())
            .collect();
        let mut example: Vec<String> = PROFILE_COLUMNS
            .iter()
            .map(|(key, _, _)| match *key {
                "account" if dialect == Dialect::Excel => format!("=\"{}\"", account.as_str()),
                "account" => account.as_str().to_owned(),
                "kind" => "avancé".into(),
                "status" => "actif".into(),
                "last_name" => "Dupré".into(),
                "first_name" => "Zoé".into(),
                "job_title" => "Logisticienne".into(),
                "email" => "zoe.dupre@example.com".into(),
                "phone" => neutralise(dialect, "+33 1 02 03 04 05"),
                "address" => "12 rue de la Gare".into(),
                "postal_code" => "88000".into(),
                "city" => "Épinal".into(),
                "country" => "FR".into(),
                "tags" => "ATELIER-7".into(),
                _ => String::new(),
            })
            .collect();
        for (def, scope) in &rights {
            header.push(def.code.clone());
            example.push(match scope {
                Some(s) => s.as_str().into(),
                None => "oui".into(),
            });
        }
        let mut buf = Vec::new();
        if dialect == Dialect::Excel {
            buf.extend_from_slice("\u{feff}".as_bytes());
        }
        let mut w = csv::WriterBuilder::new()
            .delimiter(if dialect == Dialect::Excel {
                b';'
            } else {
                b','
            })
            .from_writer(buf);
        w.write_record(&header)
            .and_then(|_| w.write_record(&example))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let csv = w.into_inner().map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Response::new(pb::GetImportTemplateResponse {
            csv,
            filename: format!("clef-import-{}.csv", account.as_str()),
        }))
    }
}

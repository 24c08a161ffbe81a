//! The one place domain errors become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{Error, RefusalReason};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations.0 {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid argument: {violations}"),
                    details,
                )
            }
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::AlreadyExists { what, .. } => {
                Status::already_exists(format!("{what} already exists"))
            }
            Error::PermissionDenied(why) => Status::permission_denied(why),
            Error::Unauthenticated => Status::unauthenticated("missing or invalid credentials"),
            Error::FailedPrecondition(why) => Status::failed_precondition(why),
            Error::Unavailable(why) => Status::unavailable(why),
            Error::ResourceExhausted(why) => Status::resource_exhausted(why),
            Error::PerAccount(refusals) => {
                let any = |reason| refusals.iter().any(|r| r.reason == reason);
                let code = if any(RefusalReason::PermissionDenied) {
                    Code::PermissionDenied
                } else if any(RefusalReason::NotFound) {
                    Code::NotFound
                } else {
                    Code::FailedPrecondition
                };
                let message = Error::PerAccount(refusals.clone()).to_string();
                let mut details = ErrorDetails::new();
                for r in refusals {
                    details.add_precondition_failure_violation(
                        r.reason.as_str(),
                        r.account,
                        r.description,
                    );
                }
                Status::with_error_details(code, format!("nothing was changed: {message}"), details)
            }
            Error::Internal(cause) => {
                // The one place an internal error is logged: its cause stays
                // in the logs, the caller learns nothing of it.
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

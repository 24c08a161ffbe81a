//! The transport's explicit limits, and the layer that answers them the gRPC
//! way: with a `grpc-status`, never a bare HTTP error.
//!
//! - A message (request or response) is at most [`MAX_MESSAGE_BYTES`]; a
//!   larger request is `RESOURCE_EXHAUSTED` (tonic's decoder says
//!   `OUT_OF_RANGE`: no clef RPC answers that code, so the layer renames it).
//! - A body that does not decode as the RPC's message is `INVALID_ARGUMENT`
//!   (tonic's decoder says `INTERNAL`; clef's own internal errors say
//!   "internal error").
//! - A request's metadata (its headers, counted as HTTP/2 does: name, value
//!   and 32 bytes each) is at most [`MAX_METADATA_BYTES`]: `RESOURCE_EXHAUSTED`
//!   beyond. HTTP/2 itself accepts up to [`H2_MAX_HEADER_LIST`], so that the
//!   answer above can be given; past that, the connection's HTTP/2 layer
//!   refuses the stream.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::codegen::http;

/// Largest message accepted or sent.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest request metadata answered normally.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The HTTP/2 header-list limit advertised to clients.
pub const H2_MAX_HEADER_LIST: u32 = 1024 * 1024;

/// gRPC status codes the layer reads and writes.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";
const INTERNAL: &str = "13";
const INVALID_ARGUMENT: &str = "3";

/// How tonic's decoder's error begins (percent-encoded in `grpc-message`).
const DECODE_FAILURE: &[u8] = b"failed%20to%20decode";

/// The size of a request's metadata, as HTTP/2 counts a header list.
fn metadata_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Applies the limits around every service.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitsLayer;

impl<S> tower_layer::Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limits { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Limits<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Limits<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let size = metadata_bytes(request.headers());
        if size > MAX_METADATA_BYTES {
            let status = tonic::Status::resource_exhausted(format!(
                "request metadata of {size} bytes is over the {MAX_METADATA_BYTES}-byte limit"
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // A trailers-only answer (an unary call refused) carries its
            // status in the headers.
            let headers = response.headers_mut();
            if headers
                .get("grpc-status")
                .is_some_and(|s| s == OUT_OF_RANGE)
            {
                headers.insert(
                    "grpc-status",
                    http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
                );
            }
            // A body that is not the message it should be is the caller's
            // error (tonic's decoder says INTERNAL), in the headers of a
            // trailers-only answer or in the trailers.
            rename_decode_failure(headers);
            Ok(response.map(|body| tonic::body::Body::new(Trailers { inner: body })))
        })
    }
}

/// `INTERNAL` from tonic's decoder becomes `INVALID_ARGUMENT`.
fn rename_decode_failure(headers: &mut http::HeaderMap) {
    if headers.get("grpc-status").is_some_and(|s| s == INTERNAL)
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.as_bytes().starts_with(DECODE_FAILURE))
    {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from_static(INVALID_ARGUMENT),
        );
    }
}

/// A response body whose trailers get [`rename_decode_failure`].
struct Trailers {
    inner: tonic::body::Body,
}

impl http_body::Body for Trailers {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        rename_decode_failure(&mut trailers);
                        http_body::Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_counted_as_http2_counts_it() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", http::HeaderValue::from_static("Bearer k"));
        assert_eq!(metadata_bytes(&h), "authorization".len() + 8 + 32);
    }
}

//! The validating admission webhook: the API server sends every BackendConfigPolicy (and the
//! other kinds kgw serves) here before storing it, and kgw answers with the same validation
//! `kgw apply` runs, so `kubectl apply` of a bad object is refused with the same message. This
//! covers what the CRD cannot say to API servers without CEL.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// Serves `POST /validate` over TLS on `address` with the given certificate and key (PEM).
pub async fn serve(address: SocketAddr, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the webhook certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the webhook certificate {} is not PEM", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read the webhook key {} (PEM, PKCS#8 or RSA)",
            key.display()
        )
    })?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the webhook certificate and key do not match")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on the webhook address {address}"))?;
    tracing::info!(%address, "admission webhook serving");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(
                        TokioIo::new(tls),
                        service_fn(|req| async { Ok::<_, Infallible>(handle(req).await) }),
                    )
                    .await;
            });
        }
    });
    Ok(())
}

async fn handle(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    if req.uri().path() != "/validate" {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "the webhook path is /validate"}),
        );
    }
    let body = match Limited::new(req.into_body(), 8 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "not an AdmissionReview"}),
        );
    };
    let started = std::time::Instant::now();
    let response = review_response(&review);
    tracing::debug!(
        allowed = %response["response"]["allowed"],
        elapsed = ?started.elapsed(),
        "admission reviewed"
    );
    reply(StatusCode::OK, response)
}

/// AdmissionReview in, AdmissionReview out: allowed, or refused with kgw's validation message.
pub fn review_response(review: &Value) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let verdict = match request.get("object").filter(|o| !o.is_null()) {
        // DELETE has no object: nothing to validate.
        None => Ok(()),
        Some(object) => validate(object),
    };
    let response = match verdict {
        Ok(()) => json!({"uid": uid, "allowed": true}),
        Err(message) => json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 422, "reason": "Invalid", "message": message},
        }),
    };
    json!({
        "apiVersion": review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    })
}

fn validate(object: &Value) -> Result<(), String> {
    let mut object = object.clone();
    // As the watch does: a null group is the core group (see store::kubernetes).
    store::kubernetes::drop_nulls(&mut object);
    let text = serde_json::to_string(&object).unwrap_or_default();
    store::admit(&text, "the admission request")
        .map(|_| ())
        .map_err(|e| {
            // One line per object, without the "error validating <source>:" prefix kubectl adds its own.
            e.to_string()
                .lines()
                .map(|l| l.split_once("): ").map(|(_, m)| m).unwrap_or(l))
                .collect::<Vec<_>>()
                .join("; ")
        })
}

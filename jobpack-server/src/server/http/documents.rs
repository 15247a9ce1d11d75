//! The OpenAPI documents (`/openapi.json`, `/openapi/jobd.json`, `/openapi/jobrunner.json`) and
//! the method table a 405's `Allow` header reads from them, made at their first use.
//!
//! Made at start, they held ~430 KB of an idle server's memory (the three documents as served)
//! and ran poem-openapi's registry of every type whether anyone asked or not. Here the first
//! request for a document, or the first 405, has them made once (tens of milliseconds); each
//! document is then one shared buffer that no response copies.

use hyper::body::Bytes;
use poem::{Endpoint, Request, Response};
use tokio::sync::OnceCell;

/// The three documents, as served, and the method table.
pub(crate) struct Made {
    pub(crate) methods: Methods,
    documents: [Bytes; 3],
}

impl Made {
    /// `documents`: the main API's, the jobd door's and the JobRunner door's, in that order.
    pub(crate) fn new(methods: Methods, documents: [String; 3]) -> Made {
        Made {
            methods,
            documents: documents.map(Bytes::from),
        }
    }
}

type Make = Box<dyn Fn() -> anyhow::Result<Made> + Send + Sync>;

/// What `make` returns, made at the first [`Documents::get`].
pub(crate) struct Documents {
    make: Make,
    made: OnceCell<Made>,
}

impl Documents {
    pub(crate) fn new(
        make: impl Fn() -> anyhow::Result<Made> + Send + Sync + 'static,
    ) -> Documents {
        Documents {
            make: Box::new(make),
            made: OnceCell::new(),
        }
    }

    /// The documents and the method table, made now if this is the first call.
    pub(crate) async fn get(&self) -> anyhow::Result<&Made> {
        self.made.get_or_try_init(|| async { (self.make)() }).await
    }

    /// Whether they have been made.
    #[cfg(test)]
    fn is_made(&self) -> bool {
        self.made.initialized()
    }
}

/// Which of the three documents an endpoint serves.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    Api = 0,
    Jobd = 1,
    JobRunner = 2,
}

/// Serves one of the documents (`application/json`).
pub(crate) struct Document {
    pub(crate) documents: std::sync::Arc<Documents>,
    pub(crate) which: Which,
}

impl Endpoint for Document {
    type Output = Response;

    async fn call(&self, _: Request) -> poem::Result<Response> {
        let made = self.documents.get().await.map_err(|e| {
            poem::Error::from_string(
                format!("the OpenAPI document could not be made: {e:#}"),
                poem::http::StatusCode::INTERNAL_SERVER_ERROR,
            )
        })?;
        Ok(Response::builder()
            .content_type("application/json")
            .body(made.documents[self.which as usize].clone()))
    }
}

/// The methods of every route, for the `Allow` header of a 405: the OpenAPI document's paths
/// (under their server prefix) and the routes outside it.
pub(crate) struct Methods(Vec<(Vec<String>, String)>);

impl Methods {
    /// From an OpenAPI document whose paths sit under `prefix`, plus `extra` routes
    /// (`path template`, `methods`).
    pub(crate) fn new(doc: &serde_json::Value, prefix: &str, extra: &[(&str, &str)]) -> Methods {
        let mut m = Methods(Vec::new());
        m.add(doc, prefix);
        for (path, ms) in extra {
            m.0.push((segments(path), (*ms).to_owned()));
        }
        m
    }

    /// Adds the routes of another OpenAPI document whose paths sit under `prefix`.
    pub(crate) fn add(&mut self, doc: &serde_json::Value, prefix: &str) {
        let out = &mut self.0;
        if let Some(serde_json::Value::Object(paths)) = doc.get("paths") {
            for (path, ops) in paths {
                let mut ms: Vec<String> = ops
                    .as_object()
                    .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                ms.sort();
                out.push((segments(&format!("{prefix}{path}")), ms.join(", ")));
            }
        }
    }

    /// The methods of the route `path` matches (`{x}` matches one segment, `*` the rest).
    pub(crate) fn allow(&self, path: &str) -> Option<&str> {
        let want = segments(path);
        self.0
            .iter()
            .find(|(t, _)| {
                let mut i = 0;
                for seg in t {
                    if seg == "*" {
                        return i < want.len();
                    }
                    match want.get(i) {
                        Some(w) if seg.starts_with('{') || seg == w => i += 1,
                        _ => return false,
                    }
                }
                i == want.len()
            })
            .map(|(_, m)| m.as_str())
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn made_once_at_the_first_use_and_never_before() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let docs = Arc::new(Documents::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let spec = serde_json::json!({"paths": {"/jobs": {"get": {}, "post": {}}}});
            let docs = ["main", "jobd", "jobrunner"].map(str::to_owned);
            Ok(Made::new(Methods::new(&spec, "/v1", &[]), docs))
        }));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(!docs.is_made());
        let ep = Document {
            documents: docs.clone(),
            which: Which::Jobd,
        };
        for _ in 0..2 {
            let resp = ep.call(Request::default()).await.unwrap();
            assert_eq!(resp.content_type(), Some("application/json"));
            assert_eq!(resp.into_body().into_string().await.unwrap(), "jobd");
        }
        let made = docs.get().await.unwrap();
        assert_eq!(made.methods.allow("/v1/jobs"), Some("GET, POST"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_document_that_cannot_be_made_is_a_500_naming_why() {
        let docs = Arc::new(Documents::new(|| anyhow::bail!("not JSON")));
        let ep = Document {
            documents: docs,
            which: Which::Api,
        };
        let err = ep.call(Request::default()).await.unwrap_err();
        assert_eq!(err.status(), 500);
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn a_405_names_the_methods_of_its_route() {
        let spec = serde_json::json!({"paths": {
            "/jobs": {"get": {}, "post": {}},
            "/jobs/{id}": {"get": {}, "delete": {}},
        }});
        let m = Methods::new(
            &spec,
            "/v1",
            &[("/v1/jobs/{id}/files/*", "GET"), ("/metrics", "GET")],
        );
        assert_eq!(m.allow("/v1/jobs"), Some("GET, POST"));
        assert_eq!(m.allow("/v1/jobs/abc"), Some("DELETE, GET"));
        assert_eq!(m.allow("/v1/jobs/abc/files/code/x"), Some("GET"));
        assert_eq!(m.allow("/metrics"), Some("GET"));
        assert_eq!(m.allow("/v1/nothing"), None);
    }
}

//! The Swagger UI at `/docs`, made at its first request instead of at start.
//!
//! poem-openapi's page inlines its 1.5 MB script, its style and the spec: about 1.7 MB that the
//! server built (passing through twice that while building) and held from the moment it started,
//! whether anyone opened the page or not, and copied whole into every response. Here the first
//! request has poem-openapi make its pages once (tens of milliseconds); they are kept as shared
//! bytes, served at the same paths with the same headers, and no response copies them.

use poem::endpoint::make_sync;
use poem::{Endpoint, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApi, OpenApiService, Webhook};
use tokio::sync::OnceCell;

/// The docs pages of the API that `make` returns (called once, at the first request).
pub struct SwaggerUi<F> {
    make: F,
    made: OnceCell<Route>,
}

pub fn swagger_ui<F>(make: F) -> SwaggerUi<F> {
    SwaggerUi {
        make,
        made: OnceCell::new(),
    }
}

/// poem-openapi's pages (`/` and `/oauth-receiver.html`), read once into shared bytes.
async fn pages<T: OpenApi, W: Webhook>(api: OpenApiService<T, W>) -> poem::Result<Route> {
    let ui = api.swagger_ui();
    let mut route = Route::new();
    for path in ["/", "/oauth-receiver.html"] {
        let made = ui
            .call(Request::builder().uri_str(path).finish())
            .await?
            .into_response();
        let kind = made
            .content_type()
            .unwrap_or("text/html; charset=utf-8")
            .to_owned();
        let page = made.into_body().into_bytes().await?;
        route = route.at(
            path,
            make_sync(move |_| Response::builder().content_type(&kind).body(page.clone())),
        );
    }
    Ok(route)
}

impl<F, T, W> Endpoint for SwaggerUi<F>
where
    F: Fn() -> OpenApiService<T, W> + Send + Sync,
    T: OpenApi + Send + Sync,
    W: Webhook + Send + Sync,
{
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let route = self.made.get_or_try_init(|| pages((self.make)())).await?;
        route.call(req).await
    }
}

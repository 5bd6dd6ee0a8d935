//! The dashboard: plain HTML, CSS and JavaScript modules from `server/ui/`, built into the
//! binary (no toolchain step), served at `/` and `/ui/<file>`, gzip-compressed once at start
//! for clients that take it, with a content security policy that allows only this origin.

use std::{io::Write as _, sync::LazyLock};

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// A file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    gzipped: Vec<u8>,
    etag: String,
}

macro_rules! assets {
    ($(($name:literal, $type:literal)),* $(,)?) => {
        [$(($name, $type, include_bytes!(concat!("../ui/", $name)) as &'static [u8])),*]
    };
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    assets![
        ("index.html", "text/html; charset=utf-8"),
        ("boot.js", "text/javascript; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("i18n.js", "text/javascript; charset=utf-8"),
        ("views.js", "text/javascript; charset=utf-8"),
        ("chart.js", "text/javascript; charset=utf-8"),
        ("work.js", "text/javascript; charset=utf-8"),
        ("doctor.js", "text/javascript; charset=utf-8"),
        ("admin.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("sw.js", "text/javascript; charset=utf-8"),
        ("manifest.webmanifest", "application/manifest+json"),
        ("icon.svg", "image/svg+xml"),
    ]
    .into_iter()
    .map(|(name, content_type, body)| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzipped = encoder.write_all(body).and_then(|()| encoder.finish()).unwrap_or_default();
        let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(body));
        Asset { name, content_type, body, gzipped, etag: format!("\"{}\"", hex::encode(&digest[..8])) }
    })
    .collect()
});

/// Only this origin's scripts, styles, images and connections; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// The dashboard's routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route("/ui/{file}", get(|Path(file): Path<String>, headers: HeaderMap| async move { serve(&file, &headers) }))
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = if headers.get(header::IF_NONE_MATCH).is_some_and(|tag| tag.as_bytes() == asset.etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzip = !asset.gzipped.is_empty()
            && asset.gzipped.len() < asset.body.len()
            && headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
        let mut response = if gzip {
            let mut response = asset.gzipped.clone().into_response();
            response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        } else {
            asset.body.into_response()
        };
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // Revalidated every time (the ETag makes that one small request): a new server version
    // shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The service worker lives under /ui/ but controls the whole dashboard.
    if name == "sw.js" {
        headers.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served_and_compressed() {
        let index =
            std::str::from_utf8(ASSETS.iter().find(|a| a.name == "index.html").expect("index").body).expect("utf-8");
        for reference in index.split("/ui/").skip(1) {
            let name: String = reference.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
            assert!(ASSETS.iter().any(|a| a.name == name), "index.html names /ui/{name}, which is not served");
        }
        for asset in ASSETS.iter().filter(|a| a.body.len() > 1_000) {
            assert!(asset.gzipped.len() < asset.body.len() / 2, "{} compresses poorly", asset.name);
        }
    }
}

//! The web dashboard, served by the API's own listener (so under the same limits): one
//! HTML page and a few plain ES modules, embedded in the binary with `include_str!`. No
//! build step and no CDN: the binary is the whole product, and it works on machines
//! without internet (docs/ARCHITECTURE.md says why).
//!
//! Everything lives under a base path (`--dashboard-base-path`, default `/`), so a reverse
//! proxy can serve it, and the API with it, under a sub-path: `{base}/` is the page,
//! `{base}/assets/{hash}/{file}` the modules and style, and `{base}/v1/...` the API
//! itself ([`DashboardOptions::strip`]). Assets are named by a hash of their contents, so
//! they are cached for good, while the page is revalidated every time.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and
//! connections from this origin only, no inline script or style, no frames. The page
//! learns its settings (base path, read-only, whether reads need a token) from a `<meta>`
//! element, never from an inline script.

use std::sync::LazyLock;

use http::{HeaderValue, Response, StatusCode, header};

use crate::api::{ApiBody, full};

/// How the dashboard is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DashboardOptions {
    /// The path prefix it (and the API with it) is served under: empty for `/`, else
    /// `/` and segments without a trailing `/`, as [`normalize_base_path`] makes it.
    pub base_path: String,
    /// Serve a page with no write control at all. The API itself still takes writes
    /// with the token (the CLI needs them): the page is not a security boundary, the
    /// token is.
    pub read_only: bool,
    /// Whether reads of releases need a token (`--read-token-file`): the page then asks
    /// for one before it shows anything.
    pub reads_need_token: bool,
}

/// Why a base path is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the dashboard base path '{0}' is not a path of its own: use `/` and segments of letters, digits, `-`, `_` and `.`, not starting with the API's /v1, /metrics or /healthz, such as /cutover"
)]
pub struct BasePathError(pub String);

/// `path` as a base path: `/` and `` become empty, `/cutover/` becomes `/cutover`. Only
/// letters, digits, `-`, `_`, `.` and `/` are taken, so the path can go into the page's
/// HTML and headers as it is.
pub fn normalize_base_path(path: &str) -> Result<String, BasePathError> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let valid = trimmed.starts_with('/')
        && trimmed.len() <= 200
        && trimmed.split('/').skip(1).all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    // The API's own paths stay the API's: a base path there would answer them with the page.
    let first = trimmed.split('/').nth(1).unwrap_or_default();
    let shadows_api = matches!(first, "v1" | "metrics" | "healthz");
    if valid && !shadows_api {
        Ok(trimmed.to_string())
    } else {
        Err(BasePathError(path.to_string()))
    }
}

impl DashboardOptions {
    /// The request path within the base path: `Some("/v1/releases")` for
    /// `{base}/v1/releases`, `Some("/")` for `{base}`; `None` for a path outside it
    /// (which the API then answers as it always has, so the CLI's paths at `/` keep
    /// working under any base path).
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.base_path.is_empty() {
            return Some(path);
        }
        let rest = path.strip_prefix(self.base_path.as_str())?;
        if rest.is_empty() {
            Some("/")
        } else if rest.starts_with('/') {
            Some(rest)
        } else {
            None
        }
    }
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The modules and the style sheet, as the binary carries them.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/api.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/charts.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../dashboard/style.css"),
    },
];

/// The page, with `{{base}}`, `{{assets}}` and `{{config}}` to fill in.
const INDEX: &str = include_str!("../dashboard/index.html");

/// What every dashboard answer says about where its content may come from: nothing
/// inline, nothing from elsewhere, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A hash of every asset (FNV-1a, 64 bits, in hex): the assets' path segment, so a new
/// binary's assets never meet an old cached copy.
static ASSETS_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for asset in ASSETS {
        for byte in asset.name.bytes().chain(asset.body.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
});

/// Adds the headers every dashboard answer carries.
fn secured(mut response: Response<ApiBody>, cache: &'static str) -> Response<ApiBody> {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// The page for these options.
fn index(options: &DashboardOptions) -> String {
    let config = serde_json::json!({
        "base": options.base_path,
        "readOnly": options.read_only,
        "readsNeedToken": options.reads_need_token,
    })
    .to_string();
    // The config goes into an attribute: escape what would end it.
    let config = config
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    INDEX
        .replace("{{base}}", &options.base_path)
        .replace("{{assets}}", &ASSETS_HASH)
        .replace("{{config}}", &config)
}

/// The dashboard's answer to a `GET` of `path` (within the base path), or `None` if the
/// path is not the dashboard's.
pub(crate) fn serve(options: &DashboardOptions, path: &str) -> Option<Response<ApiBody>> {
    if path == "/" || path == "/index.html" {
        return Some(secured(
            full(
                StatusCode::OK,
                "text/html; charset=utf-8",
                index(options).into_bytes(),
            ),
            "no-cache",
        ));
    }
    let rest = path.strip_prefix("/assets/")?;
    let (hash, name) = rest.split_once('/')?;
    let asset = ASSETS.iter().find(|a| a.name == name);
    Some(match asset {
        Some(asset) if hash == ASSETS_HASH.as_str() => secured(
            full(
                StatusCode::OK,
                asset.content_type,
                asset.body.as_bytes().to_vec(),
            ),
            "public, max-age=31536000, immutable",
        ),
        _ => secured(
            crate::api::error(
                StatusCode::NOT_FOUND,
                "notFound",
                format!("no dashboard asset {path}; reload the page"),
            ),
            "no-store",
        ),
    })
}

/// The redirect from `{base}` without its slash to `{base}/`, so the page's relative
/// links resolve under the base path.
pub(crate) fn redirect_to_slash(options: &DashboardOptions) -> Response<ApiBody> {
    let mut response = full(StatusCode::MOVED_PERMANENTLY, "text/plain", Vec::new());
    if let Ok(location) = HeaderValue::from_str(&format!("{}/", options.base_path)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(base: &str) -> DashboardOptions {
        DashboardOptions {
            base_path: normalize_base_path(base).expect("valid"),
            read_only: false,
            reads_need_token: false,
        }
    }

    #[test]
    fn base_paths_are_normalized_and_anything_that_could_escape_html_is_refused() {
        assert_eq!(normalize_base_path("/").as_deref(), Ok(""));
        assert_eq!(normalize_base_path("").as_deref(), Ok(""));
        assert_eq!(normalize_base_path("/cutover/").as_deref(), Ok("/cutover"));
        assert_eq!(normalize_base_path("/a/b-c").as_deref(), Ok("/a/b-c"));
        for api in ["/v1", "/v1/releases", "/metrics", "/healthz/x"] {
            assert!(normalize_base_path(api).is_err(), "{api} shadows the API");
        }
        assert_eq!(normalize_base_path("/v1x").as_deref(), Ok("/v1x"));
        for bad in ["cutover", "/a//b", "/a/../b", "/\"><script>", "/a b", "/é"] {
            assert!(normalize_base_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_under_the_base_are_stripped_and_others_left_to_the_api() {
        let o = options("/cutover");
        assert_eq!(o.strip("/cutover"), Some("/"));
        assert_eq!(o.strip("/cutover/"), Some("/"));
        assert_eq!(o.strip("/cutover/v1/releases"), Some("/v1/releases"));
        assert_eq!(o.strip("/cutoverx/v1"), None);
        assert_eq!(o.strip("/v1/releases"), None);
        assert_eq!(options("/").strip("/v1/releases"), Some("/v1/releases"));
    }

    #[test]
    fn the_page_names_hashed_assets_and_carries_no_inline_script() {
        let o = DashboardOptions {
            read_only: true,
            ..options("/cutover")
        };
        let page = index(&o);
        assert!(page.contains(&format!("/cutover/assets/{}/app.js", *ASSETS_HASH)));
        assert!(page.contains("&quot;readOnly&quot;:true"), "{page}");
        assert!(!page.contains("{{"), "every placeholder filled: {page}");
        // Every script is a module from a file; no inline code, no inline handler.
        for script in page.split("<script").skip(1) {
            assert!(script.contains("src="), "inline script: {script}");
        }
        assert!(!page.contains(" onclick="), "inline handler");
        assert!(!page.contains("style=\""), "inline style");
    }

    #[test]
    fn assets_are_served_only_under_the_current_hash_with_the_policy() {
        let o = options("/");
        let hash = &*ASSETS_HASH;
        let ok = serve(&o, &format!("/assets/{hash}/app.js")).expect("answered");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers()[header::CONTENT_SECURITY_POLICY],
            HeaderValue::from_static(CSP)
        );
        assert!(
            ok.headers()[header::CACHE_CONTROL]
                .to_str()
                .is_ok_and(|c| c.contains("immutable"))
        );
        let old = serve(&o, "/assets/0000000000000000/app.js").expect("answered");
        assert_eq!(old.status(), StatusCode::NOT_FOUND);
        let page = serve(&o, "/").expect("answered");
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(serve(&o, "/v1/releases").is_none());
    }
}

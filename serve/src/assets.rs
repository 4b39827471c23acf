//! The page, embedded at build time by `build.rs` (the page's own files and the dist files of
//! its pinned npm packages), so the binary serves it with no network access and no files beside
//! it.

/// One embedded file.
pub(crate) struct Asset {
    /// Its URL path.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The file served at `path`.
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_libraries_are_embedded() {
        let index = find("/").expect("the page");
        let html = std::str::from_utf8(index.body).expect("utf-8");
        for asset in ASSETS.iter().filter(|a| a.path != "/") {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            assert!(html.contains(asset.path.trim_start_matches('/')), "the page does not load {}", asset.path);
        }
        assert!(find("/nope.js").is_none());
    }
}

//! Content types by file extension: the types a web application's public
//! directory holds, as nginx's mime.types names them, and whether a type
//! is worth a precompressed sibling (`.br`, `.gz`).

const TYPES: &[(&str, &str)] = &[
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("js", "application/javascript"),
    ("mjs", "application/javascript"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("webmanifest", "application/manifest+json"),
    ("xml", "text/xml"),
    ("rss", "application/rss+xml"),
    ("atom", "application/atom+xml"),
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("ics", "text/calendar"),
    ("svg", "image/svg+xml"),
    ("svgz", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("bmp", "image/bmp"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("eot", "application/vnd.ms-fontobject"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
];

const FALLBACK: &str = "application/octet-stream";

/// The type for a file name (case-insensitive extension).
pub fn content_type(name: &[u8]) -> &'static str {
    extension(name)
        .and_then(|ext| TYPES.iter().find(|(known, _)| known.eq_ignore_ascii_case(ext)))
        .map_or(FALLBACK, |(_, content_type)| content_type)
}

/// Text-like types compress well; images, fonts (woff) and archives are
/// compressed already, so no sibling is looked for.
pub fn is_compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || matches!(
            content_type,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/rss+xml"
                | "application/atom+xml"
                | "image/svg+xml"
                | "application/wasm"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

fn extension(name: &[u8]) -> Option<&str> {
    let file = name.rsplit(|&byte| byte == b'/').next()?;
    let dot = file.iter().rposition(|&byte| byte == b'.')?;
    std::str::from_utf8(&file[dot + 1..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(content_type(b"assets/app-1a2b.CSS"), "text/css");
        assert_eq!(content_type(b"a/b.c/index.html"), "text/html");
        assert_eq!(content_type(b"robots.txt"), "text/plain");
        assert_eq!(content_type(b"a.dir/noext"), FALLBACK);
        assert_eq!(content_type(b"archive.unknownext"), FALLBACK);
        assert!(is_compressible("application/javascript"));
        assert!(!is_compressible("image/png"));
    }
}

//! Pieces of HTTP/1.1 that both directions use: chunked decoding, dates,
//! and the front's own short replies (errors, the site's pages for them,
//! the redirect to HTTPS, the answers to an ACME issuer's HTTP-01).

pub mod acme_challenge;
pub mod chunked;
pub mod date;
pub mod error_pages;
pub mod error_response;
pub mod https_redirect;

# frozen_string_literal: true

# One server facing the internet with nothing in front: HTTP redirected to
# HTTPS, certificates ordered and renewed from Let's Encrypt by the front,
# HSTS, static files and the app's send_file served by the front, the
# site's own page while workers boot or a deploy runs. Replace example.com
# and /srv/app with yours; run as a user that may bind 80 and 443 (or give
# the ports with systemd's socket activation).
require "nightmare"

worker_processes 4
timeout 30
nightmare true

# Plain HTTP: Let's Encrypt's HTTP-01 challenges are answered here by the
# front; everything else gets 308 to HTTPS (ssl_redirect below).
listen 80

ssl do
  listen 443
  acme_certificate "example.com", "www.example.com"
  acme_issuer contact: "mailto:ops@example.com", state_path: "/var/lib/nightmare/acme",
              accept_terms_of_service: true
  ssl_redirect true
end
hsts max_age: "365d"

# public/ is served by the front (sendfile, ETag, Range); the rest goes to the app.
try_files "/srv/app/current/public", "$uri", "$uri.html", "$uri/index.html"
# Rails' send_file of files under here is served by the front too.
sendfile_root "/srv/app/shared/private" => "/private/"
# The front's own 502/503/504, for browsers.
error_page 502, 503, 504, "/srv/app/current/public/503.html"

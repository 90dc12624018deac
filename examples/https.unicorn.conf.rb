# frozen_string_literal: true

# Unicorn facing the internet alone: HTTPS with rustls and static files from
# public/, both in the Nightmare! front. Run from this directory with
#   unicorn -c https.unicorn.conf.rb config.ru
#
# A certificate to try it with (self-signed, for localhost only):
#   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
#     -keyout localhost.key -out localhost.pem -days 30 -subj /CN=localhost \
#     -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
#   curl --cacert localhost.pem https://localhost:8443/
# In production, let the front order and renew the certificate itself
# (acme_certificate: see internet.unicorn.conf.rb), or point these at your
# CA's files and send the master HUP after a renewal: the front loads the
# new certificate and keeps every open connection.
require "nightmare"

worker_processes 2
listen "127.0.0.1:8080"
timeout 30

nightmare client_max_body_size: "200m"

# What exists under public/ is served by the front (sendfile, ETag, Range);
# the rest goes to the app. nginx's `try_files $uri $uri/index.html @app`:
try_files File.expand_path("public", __dir__), "$uri", "$uri/index.html"

# Unicorn 4's ssl block: the listeners inside it speak HTTPS. Add more
# ssl_certificate/ssl_certificate_key pairs for more names (chosen by SNI).
ssl do
  listen "127.0.0.1:8443"
  ssl_certificate File.expand_path("localhost.pem", __dir__)
  ssl_certificate_key File.expand_path("localhost.key", __dir__)
end

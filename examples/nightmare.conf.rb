# The Nightmare! front alone, in front of Unicorns on other machines:
#
#   nightmare -c nightmare.conf.rb        # -D to daemonize, as unicorn
#
# Unicorn's directives work here as in unicorn.conf.rb (listen, the ssl
# block, pid, stderr_path, user, working_directory); the signals too (QUIT,
# TERM, HUP reloads this file, USR1 reopens logs, USR2 re-executes).
listen 80
# ssl do
#   listen 443
#   ssl_certificate "/etc/letsencrypt/live/example.com/fullchain.pem"
#   ssl_certificate_key "/etc/letsencrypt/live/example.com/privkey.pem"
# end
pid "/run/nightmare.pid"
stderr_path "/var/log/nightmare.log"
# user "www-data"

# The front's own settings, as with `nightmare true` in a Unicorn config.
nightmare client_max_body_size: "50m", access_log: "/var/log/nightmare-access.log"
# try_files "/srv/app/current/public"
status_path "/_nightmare", allow: ["127.0.0.1", "10.0.0.0/8"]

# The application's Unicorns, sharing the load. On each of them:
#   listen "10.0.0.2:8080", proxy_protocol: true, proxy_protocol_from: ["10.0.0.1"]
# so REMOTE_ADDR is the client's (without proxy_protocol here, the client's
# address goes in X-Forwarded-For instead). max_conns: that Unicorn's
# worker_processes, so a request goes to a free worker rather than wait
# behind a busy one.
upstream "10.0.0.2:8080", "10.0.0.3:8080", proxy_protocol: true, max_conns: 4
# Taken only when both fail or are busy.
backup "10.0.0.4:8080", proxy_protocol: true
# An admin site on its own Unicorn.
map "admin.example.com" => ["10.0.0.9:8080"], proxy_protocol: true

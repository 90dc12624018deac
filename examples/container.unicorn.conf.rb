# frozen_string_literal: true

# Unicorn with Nightmare! in a container (see Dockerfile): every address,
# the port and the number of workers from the environment, logs to stderr
# (`docker logs`), temp files in the container's /tmp.
require "nightmare"

worker_processes Integer(ENV.fetch("WEB_CONCURRENCY", "2"))
listen "0.0.0.0:#{Integer(ENV.fetch('PORT', '8080'))}"
timeout 30

nightmare temp_path: "/tmp"
try_files File.expand_path("public", __dir__)

# frozen_string_literal: true

# Unicorn with Nightmare! in front: run from this directory with
#   unicorn -c unicorn.conf.rb config.ru
require "nightmare"

worker_processes 2
listen "127.0.0.1:8080"
timeout 30

# Every client goes through the front first. Settings take nginx-like values:
nightmare do
  client_max_body_size "200m"
end

# Files under public/ are served by the front itself; the rest reaches the
# app. (https.unicorn.conf.rb adds HTTPS.)
try_files File.expand_path("public", __dir__)

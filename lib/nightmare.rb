# frozen_string_literal: true

# Nightmare! lets Unicorn face slow clients: `nightmare true` in
# unicorn.conf.rb starts a front process that buffers every request whole
# before a worker sees it. Load it with `require "nightmare"` at the top of
# the config file, or `unicorn -r nightmare`.
require "unicorn"
require "nightmare/version"
require "nightmare/errors"
require "nightmare/unicorn_flavor"
require "nightmare/native"
require "nightmare/options"
require "nightmare/acme_settings"
require "nightmare/tls_settings"
require "nightmare/try_files"
require "nightmare/status_path"
require "nightmare/hsts"
require "nightmare/error_pages"
require "nightmare/upstreams"
require "nightmare/runtime_dir"
require "nightmare/private_listener"
require "nightmare/stats"
require "nightmare/handoff_acceptor"
require "nightmare/proxy_protocol_listener"
require "nightmare/front_process"
require "nightmare/front_supervisor"
require "nightmare/http_server"
require "nightmare/configurator"
require "nightmare/ssl_configurator"

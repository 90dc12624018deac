# frozen_string_literal: true

# Nightmare! lets Unicorn face slow clients: `nightmare true` in
# unicorn.conf.rb starts a front process that buffers every request whole
# before a worker sees it. Load it with `require "nightmare"` at the top of
# the config file, or `unicorn -r nightmare`.
require "unicorn"
require "nightmare/version"
require "nightmare/errors"
require "nightmare/native"
require "nightmare/stats"
# What unicorn.conf.rb says, checked when the master loads it.
require "nightmare/config/options"
require "nightmare/config/acme_settings"
require "nightmare/config/tls_settings"
require "nightmare/config/try_files"
require "nightmare/config/status_path"
require "nightmare/config/hsts"
require "nightmare/config/error_pages"
require "nightmare/config/upstreams"
# In the workers: taking requests from the front instead of the listeners.
require "nightmare/worker/unicorn_flavor"
require "nightmare/worker/handoff_acceptor"
require "nightmare/worker/proxy_protocol_listener"
# In the front process.
require "nightmare/front/front_process"
# In the master: the front's supervision and the private listener.
require "nightmare/master/runtime_dir"
require "nightmare/master/private_listener"
require "nightmare/master/front_supervisor"
require "nightmare/master/http_server"
# Unicorn's Configurator gains the directives.
require "nightmare/config/configurator"
require "nightmare/config/ssl_configurator"

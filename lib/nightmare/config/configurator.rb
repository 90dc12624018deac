# frozen_string_literal: true

module Nightmare
  # The +nightmare+ directive for Unicorn's config file.
  module Configurator
    # Puts the Nightmare! front between clients and the workers, so that a
    # slow client (slowloris, slow upload, slow reader) costs a socket in the
    # front instead of a worker. Off by default: without it Unicorn runs
    # exactly as it would without the gem.
    #
    #   nightmare true
    #   nightmare client_max_body_size: "100m", temp_path: "/dev/shm"
    #   nightmare do
    #     client_max_body_size "100m"
    #     client_body_timeout "30s"
    #   end
    #
    # See Nightmare::Options for every setting and its default.
    def nightmare(setting = true, &block)
      options = Nightmare::Options.from_directive(setting, &block)
      Nightmare::UnicornFlavor.check! if options
      set[:nightmare] = options
    end

    # Static files the front serves itself, without bothering a worker:
    # GET and HEAD requests for a regular file under +root+, with
    # Last-Modified/ETag (304) and Range (206, 416), by sendfile. Anything
    # else (no such file, a directory, other methods) goes to the app.
    #
    #   try_files "/srv/app/current/public"
    #   try_files "/srv/app/current/public", "$uri", "$uri.html", "$uri/index.html"
    #   try_files "/srv/public", "$uri", dotfiles: true, follow_symlinks: true
    #
    # The candidates are nginx's (its `try_files $uri $uri/index.html @app`
    # is `try_files ROOT, "$uri", "$uri/index.html"`: the app comes last
    # anyway). Options: +dotfiles+ (false), +follow_symlinks+ out of the
    # root (false), +precompressed+ .br/.gz siblings (true). Needs
    # +nightmare+ on.
    def try_files(root, *candidates, **options)
      set[:try_files] = Nightmare::TryFiles.new(root, candidates, options)
    end

    # The front's own figures (the same as Nightmare.stats, and nginx's
    # stub_status figures among them) at +path+, as JSON, or in nginx's
    # stub_status format with ?format=nginx, answered by the front itself
    # (so it answers while every worker is busy) to the addresses and
    # networks in +allow+ only (others get 403).
    #
    #   status_path "/_nightmare"                                # this machine only
    #   status_path "/_nightmare", allow: ["127.0.0.1", "10.0.0.0/8"]
    #
    # Needs +nightmare+ on.
    def status_path(path, **options)
      set[:status_path] = Nightmare::StatusPath.new(path, **options)
    end

    # Strict-Transport-Security on HTTPS responses that have none (see
    # Nightmare::Hsts), for every ssl listener; inside an ssl block too.
    #
    #   hsts max_age: "365d", include_subdomains: false, preload: false
    #
    # Needs +nightmare+ on.
    def hsts(**options)
      set[:hsts] = Nightmare::Hsts.new(**options)
    end

    # The site's HTML pages for the front's own 502, 503 and 504, for
    # browsers (see Nightmare::ErrorPages); repeatable. Without it, the
    # try_files root's 502.html, 503.html and 504.html serve when there.
    #
    #   error_page 502, 503, 504, "/srv/app/current/public/5xx.html"
    def error_page(*statuses, path)
      set[:error_pages] = Nightmare::ErrorPages.new unless set[:error_pages].is_a?(Nightmare::ErrorPages)
      set[:error_pages].add(statuses, path)
    end

    # Directories the app may hand files from: the front tells it so
    # (X-Sendfile-Type: X-Accel-Redirect, X-Accel-Mapping), and an app that
    # says X-Accel-Redirect itself (Rails' x_sendfile_header; Rack 2.2.22
    # and later no longer take the type from the request) answers
    # send_file with a URI under the prefix instead of the bytes, and the front serves the file as try_files does (Range,
    # HEAD, validators), keeping the app's Content-Type, Content-Disposition,
    # Cache-Control, Expires and Set-Cookie. The worker is free at once.
    #
    #   sendfile_root "/srv/app/shared/private" => "/private/"
    #
    # Repeatable. Needs +nightmare+ on.
    def sendfile_root(mapping)
      unless mapping.is_a?(Hash) && !mapping.empty?
        raise ArgumentError, 'sendfile_root takes directory => URI prefix: sendfile_root "/srv/files" => "/private/"'
      end
      mapping.each do |root, prefix|
        root = File.expand_path(root.to_s)
        File.directory?(root) or raise ArgumentError, "sendfile_root #{root}: not a directory"
        if root.match?(/[=,\r\n]/)
          raise ArgumentError, "sendfile_root #{root.inspect}: X-Accel-Mapping cannot name a directory with = or ,"
        end
        unless prefix.is_a?(String) && prefix.start_with?("/") && prefix.end_with?("/") && !prefix.match?(/[=,\s]/)
          raise ArgumentError, "sendfile_root #{root} => #{prefix.inspect}: the URI prefix starts and ends with / " \
                               '("/private/")'
        end
        set[:sendfile_roots] = [] unless set[:sendfile_roots].is_a?(Array)
        overlapping = set[:sendfile_roots].find { |_, other| other.start_with?(prefix) || prefix.start_with?(other) }
        if overlapping
          raise ArgumentError, "sendfile_root #{prefix.inspect} overlaps #{overlapping[1].inspect} (for " \
                               "#{overlapping[0]}); give each directory a prefix of its own"
        end
        set[:sendfile_roots] << [root, prefix]
      end
    end

    # Standalone only (the `nightmare` executable): the Unicorns the front
    # sends requests to, by address; several share the load. With
    # nginx's server options:
    #
    #   upstream "unix:/run/app/unicorn.sock"
    #   upstream "10.0.0.2:8080", "10.0.0.3:8080", max_conns: 4, proxy_protocol: true
    #
    # See Nightmare::Upstreams::OPTIONS. In a Unicorn config the master's own
    # workers are the upstream; other hosts go in +backup+.
    def upstream(*addresses, **options)
      nightmare_upstreams.add_primaries("upstream", addresses, options)
    end

    # Servers that take a request only when the upstreams before them fail
    # or are busy: with `nightmare true`, when every local worker already
    # has a request (never while one is free); standalone, when every
    # +upstream+ fails or is at its max_conns. The nginx failover recipe's
    # backups:
    #
    #   backup "10.0.0.2:8080", "10.0.0.3:8080", fail_timeout: 0
    def backup(*addresses, **options)
      nightmare_upstreams.add_backups("backup", addresses, options)
    end

    # Requests whose Host is one of these names go to their own servers
    # (Swiftiply's host map); `*.example.com` takes every subdomain:
    #
    #   map "admin.example.com" => ["10.0.0.9:8080"], "*.api.example.com" => "10.0.0.7:8080"
    def map(routes = {}, **options)
      # Without braces, Ruby hands the names over with the options.
      names, options = options.partition { |key, _| key.is_a?(String) }.map(&:to_h)
      nightmare_upstreams.add_routes(routes.merge(names), options)
    end

    # Set by the `nightmare` executable: this config runs a front alone. :nodoc:
    def nightmare_standalone(on)
      @nightmare_standalone = on
    end

    def commit!(server, options = {}) # :nodoc:
      nightmare_standalone_defaults if @nightmare_standalone
      nightmare_on = set[:nightmare].is_a?(Nightmare::Options)
      if nightmare_on && set[:worker_exec] == true
        raise ArgumentError, "nightmare cannot run with worker_exec true: an exec'd worker " \
                             "cannot inherit the master's private listener; drop one of the two"
      end
      nightmare_check_tls(nightmare_on)
      nightmare_check_proxy_protocol(nightmare_on)
      nightmare_check_upstreams(nightmare_on)
      nightmare_fold_front_pages(nightmare_on)
      super(server, options.merge(skip: [*options[:skip], :try_files, :status_path, :upstreams, :hsts,
                                         :error_pages, :sendfile_roots]))
    end

    # HUP reads the file anew: an ssl block removed since must not leave
    # its settings on the listener (Unicorn keeps listener options), nor
    # its ACME names.
    def reload(merge_defaults = true) # :nodoc:
      set[:listener_opts].each_value { |opts| opts.delete(:ssl_opts) } if Hash === set[:listener_opts]
      @nightmare_acme_names = nil
      super
    end

    private

    def nightmare_upstreams
      set[:upstreams] = Nightmare::Upstreams.new unless set[:upstreams].is_a?(Nightmare::Upstreams)
      set[:upstreams]
    end

    # Standalone, the front is all there is: on whatever the file says of
    # `nightmare` (its settings are welcome), and fed by upstreams.
    def nightmare_standalone_defaults
      set[:nightmare] = Nightmare::Options.new({}) unless set[:nightmare].is_a?(Nightmare::Options)
      upstreams = set[:upstreams]
      return if upstreams.is_a?(Nightmare::Upstreams) && !upstreams.empty?

      raise ArgumentError, "the nightmare executable needs somewhere to send requests: give `upstream \"host:port\"` " \
                           "(or `map`) in the config"
    end

    # Listeners fronts on other hosts send requests to, with PROXY v2
    # headers: the workers accept on them directly (with `nightmare` on
    # too: the nginx failover recipe's hosts take each other's overflow
    # in their workers, not through their fronts).
    def nightmare_check_proxy_protocol(_nightmare_on)
      marked = set[:listeners].select do |address|
        Nightmare::ProxyProtocolOptions.allowed(address, set[:listener_opts].fetch(address, {}))
      end
      Unicorn::HttpServer.prepend(Nightmare::ProxyProtocolListeners) unless marked.empty?
    end

    def nightmare_check_upstreams(nightmare_on)
      upstreams = set[:upstreams]
      return unless upstreams.is_a?(Nightmare::Upstreams)

      unless nightmare_on
        raise ArgumentError, "backup, upstream and map need the front: add `nightmare true` to the config " \
                             "(or remove them)"
      end
      return if @nightmare_standalone || upstreams.primaries.empty?

      raise ArgumentError, "upstream: in a Unicorn config the master's own workers are the upstream; give other " \
                           "hosts with `backup` (or run the front alone with the nightmare executable)"
    end

    # try_files, status_path, hsts and the error pages are the front's, so
    # they travel with the front's settings (a change on HUP starts a new
    # front).
    def nightmare_fold_front_pages(nightmare_on)
      try_files = set[:try_files].is_a?(Nightmare::TryFiles) ? set[:try_files] : nil
      status_page = set[:status_path].is_a?(Nightmare::StatusPath) ? set[:status_path] : nil
      hsts = set[:hsts].is_a?(Nightmare::Hsts) ? set[:hsts] : nil
      if hsts && !nightmare_on
        raise ArgumentError, "hsts needs the front: it is the front that speaks HTTPS; add `nightmare true` " \
                             "to the config (or remove hsts)"
      end
      sendfile_roots = set[:sendfile_roots].is_a?(Array) ? set[:sendfile_roots] : []
      if !sendfile_roots.empty? && !nightmare_on
        raise ArgumentError, "sendfile_root needs the front: it is the front that serves the files; add " \
                             "`nightmare true` to the config (or remove sendfile_root)"
      end
      error_pages = set[:error_pages].is_a?(Nightmare::ErrorPages) ? set[:error_pages] : nil
      if error_pages && !nightmare_on
        raise ArgumentError, "error_page needs the front: it is the front that answers 502, 503 and 504; add " \
                             "`nightmare true` to the config (or remove error_page)"
      end
      if try_files && !nightmare_on
        raise ArgumentError, "try_files needs the front: Unicorn alone serves no static files; " \
                             "add `nightmare true` to the config (or remove try_files)"
      end
      if status_page && !nightmare_on
        raise ArgumentError, "status_path needs the front: it is the front that answers it; " \
                             "add `nightmare true` to the config (or remove status_path)"
      end
      return unless nightmare_on

      upstreams = set[:upstreams].is_a?(Nightmare::Upstreams) ? set[:upstreams] : nil
      pages = (error_pages || Nightmare::ErrorPages.new).to_native(try_files&.root)
      set[:nightmare] = set[:nightmare].with(try_files: try_files, status_page: status_page, upstreams: upstreams,
                                             hsts: hsts, error_pages: pages, sendfile_roots: sendfile_roots)
    end

    # Every ssl block's files are read and parsed now, so a bad one stops
    # the start (or, on HUP, keeps the running config) with its name.
    def nightmare_check_tls(nightmare_on)
      blocks = set[:listeners].filter_map { |address| set[:listener_opts].fetch(address, {})[:ssl_opts] }.uniq
      if nightmare_on && set[:nightmare][:ssl_redirect] == "on" && blocks.empty?
        raise ArgumentError, "ssl_redirect: there is no ssl listener to send clients to; add an ssl block " \
                             "(or drop ssl_redirect)"
      end
      return if blocks.empty?

      unless nightmare_on
        raise ArgumentError, "ssl needs the front: Unicorn alone has no TLS; add `nightmare true` " \
                             "to the config (or remove the ssl block)"
      end
      blocks.each(&:check!)
    end
  end
end

Unicorn::Configurator.prepend(Nightmare::Configurator)
# HUP merges the defaults back before re-reading the file, so a removed
# `nightmare` line turns the front off again.
Unicorn::Configurator::DEFAULTS[:nightmare] = false
Unicorn::Configurator::DEFAULTS[:try_files] = nil
Unicorn::Configurator::DEFAULTS[:status_path] = nil
Unicorn::Configurator::DEFAULTS[:upstreams] = nil
Unicorn::Configurator::DEFAULTS[:hsts] = nil
Unicorn::Configurator::DEFAULTS[:error_pages] = nil
Unicorn::Configurator::DEFAULTS[:sendfile_roots] = nil

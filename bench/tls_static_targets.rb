# frozen_string_literal: true

require_relative "targets"

module Bench
  # The same certificate and the same public directory for both servers of
  # the HTTPS and static-file benchmark.
  Site = Struct.new(:certificate, :key, :public_dir)

  # A target that also listens for HTTPS, serving +site+ (its certificate
  # and public directory).
  module TlsSite
    attr_reader :tls_port

    def initialize(name, root, site)
      super(name, root)
      @site = site
      @tls_port = LocalProcesses.free_port
    end

    def tls_url(path = "/") = "https://127.0.0.1:#{@tls_port}#{path}"
  end

  # nginx with HTTPS (and HTTP/2, as Nightmare offers it) and `try_files
  # $uri @unicorn` in front of Unicorn: the nginx recipe Nightmare's ssl
  # block and try_files replace.
  class NginxTlsStatic < NginxUnicorn
    include TlsSite

    # +http+: more of nginx's http block.
    def start(http = "")
      start_with(<<~HTTP)
        #{http}
        sendfile on;
        tcp_nopush on;
        client_max_body_size 200m;
        proxy_max_temp_file_size 1024m;
        server {
          listen 127.0.0.1:#{@port};
          listen 127.0.0.1:#{@tls_port} ssl http2;
          ssl_certificate #{@site.certificate};
          ssl_certificate_key #{@site.key};
          ssl_protocols TLSv1.2 TLSv1.3;
          ssl_session_cache shared:SSL:10m;
          root #{@site.public_dir};
          location / { try_files $uri @unicorn; }
          location @unicorn {
            proxy_pass http://unicorn;
            proxy_buffering on;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
          }
        }
      HTTP
      wait_for_port
      wait_for_port(@tls_port)
      self
    end
  end

  # Unicorn with Nightmare!: an ssl block and try_files in unicorn.conf.rb.
  class NightmareTlsStatic < UnicornNightmare
    include TlsSite

    def start
      @master = unicorn(<<~CONFIG)
        require "nightmare"
        worker_processes #{WORKERS}
        listen "127.0.0.1:#{@port}"
        stderr_path "#{@dir}/unicorn.log"
        nightmare client_max_body_size: "200m"
        try_files #{@site.public_dir.inspect}
        ssl do
          listen "127.0.0.1:#{@tls_port}"
          ssl_certificate #{@site.certificate.inspect}
          ssl_certificate_key #{@site.key.inspect}
        end
      CONFIG
      wait_for_port
      wait_for_port(@tls_port)
      self
    end
  end
end

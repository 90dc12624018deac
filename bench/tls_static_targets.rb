# frozen_string_literal: true

require "fileutils"
require "open3"
require_relative "targets"

module Bench
  # The same certificate and the same public directory for both servers of
  # the HTTPS, HTTP/2 and static-file benchmarks.
  Site = Struct.new(:certificate, :key, :public_dir) do
    # A certificate of a kind users deploy (:ecdsa P-256 or :rsa 2048) for
    # localhost and 127.0.0.1, and a public directory with a small
    # stylesheet and, if +big+ bytes are asked for, a sparse big.bin.
    def self.make(root, kind = :ecdsa, big: nil)
      dir = File.join(root, "site-#{kind}")
      public_dir = File.join(dir, "public")
      FileUtils.mkdir_p(public_dir)
      key = File.join(dir, "key.pem")
      certificate = File.join(dir, "cert.pem")
      algorithm = { ecdsa: %w[EC ec_paramgen_curve:P-256], rsa: %w[RSA rsa_keygen_bits:2048] }.fetch(kind)
      openssl("genpkey", "-algorithm", algorithm[0], "-pkeyopt", algorithm[1], "-out", key)
      openssl("req", "-x509", "-new", "-key", key, "-out", certificate, "-days", "2", "-subj", "/CN=localhost",
              "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
      File.write(File.join(public_dir, "small.css"), "body { margin: 0 }\n" * 50)
      File.open(File.join(public_dir, "big.bin"), "wb") { |file| file.truncate(big) } if big
      new(certificate, key, public_dir)
    end

    def self.openssl(*args)
      output, status = Open3.capture2e("openssl", *args)
      status.success? or abort "openssl #{args.join(' ')}: #{output}"
    end
  end

  # A target that also listens for HTTPS, serving +site+ (its certificate
  # and public directory).
  module TlsSite
    attr_reader :tls_port, :site

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
          # The app's send_file (X-Accel-Redirect) serves from here.
          location /private/ { internal; alias #{@site.public_dir}/; }
          location @unicorn {
            proxy_pass http://unicorn;
            proxy_buffering on;
            proxy_set_header X-Sendfile-Type X-Accel-Redirect;
            proxy_set_header X-Accel-Mapping #{@site.public_dir}/=/private/;
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
        sendfile_root #{@site.public_dir.inspect} => "/private/"
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

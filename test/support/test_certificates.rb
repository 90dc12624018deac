# frozen_string_literal: true

require "open3"
require "openssl"

# Self-signed certificates made with the openssl command at test time, in
# the formats users have: ECDSA P-256 (SEC1 or PKCS#8 keys), RSA (PKCS#1
# keys), Ed25519.
module TestCertificates
  module_function

  # Writes NAME.pem and NAME.key into +dir+ for +hosts+; returns the paths.
  def make(dir, name, hosts, kind: :ecdsa)
    key = File.join(dir, "#{name}.key")
    cert = File.join(dir, "#{name}.pem")
    case kind
    when :ecdsa_sec1 then openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    when :ecdsa then openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    when :rsa_pkcs1 then openssl("genrsa", "-traditional", "-out", key, "2048")
    when :ed25519 then openssl("genpkey", "-algorithm", "ed25519", "-out", key)
    else raise ArgumentError, "unknown key kind #{kind}"
    end
    names = hosts.map { |host| host.match?(/\A[\d.]+\z/) ? "IP:#{host}" : "DNS:#{host}" }.join(",")
    openssl("req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-subj", "/CN=#{hosts.first}",
            "-addext", "subjectAltName=#{names}")
    [cert, key]
  end

  # An ssl block for unicorn.conf.rb: one loopback listener on +port+, the
  # pair, and +extra+ lines inside.
  def ssl_block(port, cert, key, extra = "")
    <<~BLOCK
      ssl do
        listen "127.0.0.1:#{port}"
        ssl_certificate #{cert.inspect}
        ssl_certificate_key #{key.inspect}
        #{extra}
      end
    BLOCK
  end

  def openssl(*args)
    output, status = Open3.capture2e("openssl", *args)
    raise "openssl #{args.join(' ')} failed: #{output}" unless status.success?
  end

  # The certificate a TLS server presents for +hostname+ (SNI), and the
  # connected socket, trusting +ca_file+ only.
  def connect(port, hostname, ca_file, ssl_version: nil)
    tcp = TCPSocket.new("127.0.0.1", port)
    context = OpenSSL::SSL::SSLContext.new
    context.ca_file = ca_file
    context.verify_mode = OpenSSL::SSL::VERIFY_PEER
    context.verify_hostname = false # the tests check the certificate's name themselves
    if ssl_version
      context.min_version = ssl_version
      context.max_version = ssl_version
    end
    socket = OpenSSL::SSL::SSLSocket.new(tcp, context)
    socket.hostname = hostname if hostname
    socket.sync_close = true
    socket.connect
    socket
  end
end

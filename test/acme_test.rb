# frozen_string_literal: true

require_relative "test_helper"
require "etc"
require_relative "support/test_certificates"
require_relative "../support/pebble_server"

# Certificates the front orders itself (acme_certificate), against Pebble,
# Let's Encrypt's test server, with real validation: Pebble's DNS sends
# every name to 127.0.0.1 and its validator connects to the front's plain
# port (HTTP-01) or TLS port (TLS-ALPN-01).
class AcmeTest < Minitest::Test
  include HttpHelpers
  include ConfigRefusals

  NAMES = %w[site.test www.site.test].freeze

  def setup
    @dir = Dir.mktmpdir("nightmare-acme")
    @state = File.join(@dir, "state")
    @http_port = LocalProcesses.free_port
    @tls_port = LocalProcesses.free_port
  end

  def teardown
    @server&.stop
    @pebble&.stop
    FileUtils.rm_rf(@dir) unless ENV["KEEP_TEST_DIRS"]
  end

  def start_pebble(**options)
    @pebble = PebbleServer.new(dir: File.join(@dir, "pebble"), http_port: @http_port, tls_port: @tls_port,
                               **options).start
  end

  def start(block: "acme_certificate #{NAMES.map(&:inspect).join(', ')}", issuer: nil, top: "")
    issuer ||= "acme_issuer #{@pebble.directory_url.inspect}, ca_file: #{@pebble.ca_file.inspect}, " \
               "state_path: #{@state.inspect}, accept_terms_of_service: true, contact: \"mailto:ops@site.test\""
    @server = UnicornServer.new(workers: 1, config: <<~CONFIG)
      listen "127.0.0.1:#{@http_port}"
      #{top}
      ssl do
        listen "127.0.0.1:#{@tls_port}"
        #{block}
        #{issuer}
      end
    CONFIG
    FileUtils.chmod(0o755, @server.dir) if top.include?("user ")
    @server.start
  end

  # The certificate served for +name+, verified against +ca_file+.
  def served(name, ca_file = @pebble.root_file)
    socket = TestCertificates.connect(@tls_port, name, ca_file)
    socket.peer_cert
  ensure
    socket&.close
  end

  def wait_for_issued(name = NAMES.first, seconds = 20)
    certificate = nil
    @server.wait_until("a certificate for #{name} from Pebble", seconds) do
      certificate = served(name)
    rescue OpenSSL::SSL::SSLError
      false
    end
    certificate
  end

  def names_of(certificate)
    extension = certificate.extensions.find { |ext| ext.oid == "subjectAltName" }
    extension.value.split(", ").map { |entry| entry.delete_prefix("DNS:") }
  end

  def test_first_start_orders_one_certificate_for_the_names_and_a_restart_or_hup_reuses_it
    start_pebble
    start(top: "", block: "acme_certificate #{NAMES.map(&:inspect).join(', ')}\nssl_redirect true")
    certificate = wait_for_issued
    assert_equal NAMES.sort, names_of(certificate).sort, "one certificate covers both names"
    assert_equal certificate.serial, served("www.site.test").serial
    assert_equal 1, @pebble.issued_count
    assert_match(/acme_certificate site.test, www.site.test: certificate installed \(http-01\)/, @server.log,
                 "HTTP-01 got through although plain requests are redirected")
    redirect = raw_request("GET /x HTTP/1.1\r\nHost: site.test\r\n\r\n", port: @http_port)
    assert_equal 308, redirect.status
    assert_equal "https://site.test:#{@tls_port}/x", redirect.headers["location"]

    issuer_dir = Dir[File.join(@state, "*")].first
    assert_equal 0o700, File.stat(issuer_dir).mode & 0o777
    assert_equal 0o600, File.stat(File.join(issuer_dir, "account.key")).mode & 0o777
    assert_equal 0o600, File.stat(File.join(issuer_dir, "certificates/site.test/privkey.pem")).mode & 0o777

    Process.kill(:HUP, @server.pid)
    @server.wait_until("the reload", 10) { @server.log.include?("done reloading") }
    assert_equal certificate.serial, served("site.test").serial, "HUP keeps the certificate"

    @server.stop
    start
    assert_equal certificate.serial, served("site.test").serial, "a restart serves the stored certificate at once"
    assert_match(/using the stored certificate/, @server.log)
    assert_equal 1, @pebble.issued_count, "no new order after HUP or restart"
    assert_equal 1, @pebble.orders_count
  end

  # Also as `user`: the master makes state_path as root at load, and the
  # front, which orders as nobody, must be able to write it.
  def test_tls_alpn_01_on_the_ssl_listener_by_a_front_that_is_not_root
    nobody = Etc.getpwnam("nobody")
    FileUtils.chmod(0o755, @dir)
    start_pebble
    start(top: %(user "nobody", "#{Etc.getgrgid(nobody.gid).name}"),
          issuer: "acme_issuer #{@pebble.directory_url.inspect}, ca_file: #{@pebble.ca_file.inspect}, " \
                  "state_path: #{@state.inspect}, accept_terms_of_service: true, challenge: \"tls-alpn-01\"")
    assert_equal NAMES.sort, names_of(wait_for_issued).sort
    assert_match(/certificate installed \(tls-alpn-01\)/, @server.log)
    stored = Dir[File.join(@state, "*", "certificates", "site.test", "fullchain.pem")].first
    assert_equal nobody.uid, File.stat(stored).uid, "stored by the front as nobody"
  end

  def test_a_short_lived_certificate_is_renewed_under_a_client_loop_with_no_failed_request
    start_pebble(validity: 45)
    start
    first = wait_for_issued
    keep_alive = TestCertificates.connect(@tls_port, "site.test", @pebble.root_file)
    failures = []
    renewed = nil
    requests = 0
    while Time.now < first.not_after + 2 && !renewed
      begin
        serial = served("site.test").serial
        renewed = Time.now if serial != first.serial
        exchange(keep_alive)
        requests += 1
      rescue StandardError => e
        failures << e
      end
      sleep 0.1
    end
    assert_empty failures, "no request fails across the renewal (#{requests} served)"
    assert renewed, "renewed before the first certificate expired"
    assert_operator renewed, :<, first.not_after
    lifetime = first.not_after - first.not_before
    assert_operator renewed - first.not_before, :>=, lifetime * 0.6, "renewed near two thirds, not at once"
    exchange(keep_alive)
    assert_equal 2, @pebble.issued_count
  ensure
    keep_alive&.close
  end

  # One keep-alive request on +socket+: a connection from before a renewal
  # goes on with the certificate it began with.
  def exchange(socket)
    socket.write("GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
    response = ResponseReader.new(socket).read_response(5)
    raise "status #{response.status}" unless response.status == 200
  end

  def test_a_bad_directory_url_is_logged_and_retried_while_everything_else_serves
    cert, key = TestCertificates.make(@dir, "fixed", ["fixed.test"])
    start(block: "ssl_certificate #{cert.inspect}\nssl_certificate_key #{key.inspect}\nacme_certificate \"site.test\"",
          issuer: "acme_issuer \"https://127.0.0.1:1/dir\", state_path: #{@state.inspect}, " \
                  "accept_terms_of_service: true")
    @server.wait_until("the ACME error", 10) { @server.log.include?("acme_issuer https://127.0.0.1:1/dir") }
    assert_match(%r{acme_issuer https://127.0.0.1:1/dir: cannot read the directory: .*refused.* \(acme_certificate site.test\); retrying in 300 s},
                 @server.log)
    assert_equal ["fixed.test"], names_of(served("fixed.test", cert)), "a name with a certificate is served"
    error = assert_raises(OpenSSL::SSL::SSLError) { served("site.test", cert) }
    assert_match(/certificate verify failed/, error.message, "the waiting name gets its temporary certificate")
    assert_equal 200, get("/").status, "plain HTTP works"
  end

  def test_the_temporary_certificate_says_what_it_is
    start(block: "acme_certificate \"site.test\"",
          issuer: "acme_issuer \"https://127.0.0.1:1/dir\", state_path: #{@state.inspect}, " \
                  "accept_terms_of_service: true")
    tcp = TCPSocket.new("127.0.0.1", @tls_port)
    socket = OpenSSL::SSL::SSLSocket.new(tcp, OpenSSL::SSL::SSLContext.new.tap { |c| c.verify_mode = 0 })
    socket.hostname = "site.test"
    socket.connect
    assert_match(/Nightmare temporary certificate/, socket.peer_cert.subject.to_s)
    assert_equal ["site.test"], names_of(socket.peer_cert)
  ensure
    socket&.close
  end

  def test_a_name_that_does_not_point_here_fails_once_and_waits_without_harming_the_other_names
    start_pebble
    @pebble.point("elsewhere.test", "127.0.0.2")
    start(block: "acme_certificate \"site.test\"\nacme_certificate \"elsewhere.test\"")
    wait_for_issued("site.test")
    @server.wait_until("both challenges failing", 20) { @server.log.include?("retrying in 600 s") }
    assert_match(/acme_certificate elsewhere.test: .* refused: .*elsewhere.test: http-01 validation failed.*retrying now with tls-alpn-01/,
                 @server.log)
    assert_match(/acme_certificate elsewhere.test: .* refused: .*elsewhere.test: tls-alpn-01 validation failed.*retrying in 600 s/,
                 @server.log)
    sleep 3
    assert_equal 3, @pebble.orders_count, "site.test's order, and elsewhere.test's with each challenge, then a wait"
    retry_at = Integer(File.read(Dir[File.join(@state, "*", "certificates", "elsewhere.test", "retry-after")].first))
    assert_in_delta Time.now.to_i + 600, retry_at, 10, "a restart keeps the wait"
  end

  def test_config_errors_name_the_directive_and_the_fix
    assert_configs_refused(@dir, {
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate '*.site.test'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}'\nend" =>
        /acme_certificate \*.site.test: wildcard names need the DNS-01 challenge/,
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate 'site.test'\nend" =>
        /acme_issuer: ordering certificates means agreeing .* accept_terms_of_service: true/,
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate 'site.test'\nacme_issuer 'http://ca.test/dir', accept_terms_of_service: true\nend" =>
        %r{acme_issuer "http://ca.test/dir" is not an https:// URL},
      "ssl do\nlisten '127.0.0.1:0'\nacme_issuer accept_terms_of_service: true\nend" =>
        /acme_issuer without acme_certificate/,
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate '127.0.0.1'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}'\nend" =>
        /acme_certificate "127.0.0.1" is not a DNS name/,
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate 'a.test', 'a.test'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}'\nend" =>
        /acme_certificate: a.test is named twice/,
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate 'a.test'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}', challenge: 'dns-01'\nend" =>
        /acme_issuer challenge: "dns-01" is not one of http-01, tls-alpn-01/,
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate 'a.test'\nacme_issuer accept_terms_of_service: true, stat_path: '/x'\nend" =>
        /acme_issuer: unknown option stat_path/,
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate 'a.test'\nacme_issuer accept_terms_of_service: true, state_path: '/proc/nope'\nend" =>
        %r{acme_issuer state_path: /proc/nope cannot be used},
      "ssl do\nlisten '127.0.0.1:0'\nacme_certificate 'a.test'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}', contact: 'ops@site.test'\nend" =>
        /acme_issuer contact: "ops@site.test" is not a mailto: address/,
      "nightmare true\nssl do\nlisten '127.0.0.1:9'\nacme_certificate 'a.test'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}', ca_file: '#{File.expand_path(__FILE__)}'\nend" =>
        /acme_issuer: ca_file .* holds no usable certificate/,
      "ssl do\nlisten '127.0.0.1:7'\nacme_certificate 'a.test'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}'\nend\n" \
      "ssl do\nlisten '127.0.0.1:8'\nacme_certificate 'a.test'\nacme_issuer accept_terms_of_service: true, state_path: '#{@state}'\nend" =>
        /acme_certificate: a.test is ordered by another ssl block already/
    })
  end
end

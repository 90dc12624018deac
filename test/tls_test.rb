# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/test_certificates"

# HTTPS in the front, configured by Unicorn 4's ssl block: the app sees
# https requests from the real client, certificates are chosen by SNI and
# reloaded by HUP, and everything the plain front does holds over TLS.
class TlsTest < Minitest::Test
  include HttpHelpers

  def setup
    @certs = Dir.mktmpdir("nightmare-certs")
    @pairs = {
      "a.test" => TestCertificates.make(@certs, "a", ["a.test", "127.0.0.1"]),
      "b.test" => TestCertificates.make(@certs, "b", ["b.test"], kind: :rsa_pkcs1),
      "c.test" => TestCertificates.make(@certs, "c", ["c.test"], kind: :ecdsa_sec1),
      "d.test" => TestCertificates.make(@certs, "d", ["d.test"], kind: :ed25519),
    }
    write_bundle
    @public = File.join(@certs, "public")
    FileUtils.mkdir_p(@public)
    @static = Random.bytes(6 << 20)
    File.binwrite(File.join(@public, "static.bin"), @static)
    @tls_port = LocalProcesses.free_port
    pairs = @pairs.values.map { |cert, key| "ssl_certificate #{cert.inspect}\n  ssl_certificate_key #{key.inspect}" }
    @server = UnicornServer.new(workers: 2, nightmare: 'client_max_body_size: "64m", client_header_timeout: 5',
                                config: <<~CONFIG).start
                                  try_files #{@public.inspect}
                                  ssl do
                                    listen "127.0.0.1:#{@tls_port}"
                                    #{pairs.join("\n  ")}
                                  end
                                CONFIG
  end

  def teardown
    @server.stop
    FileUtils.rm_rf(@certs)
  end

  def test_requests_over_https_keep_their_connection_and_reach_the_app_as_https
    socket = tls_connect("a.test")
    socket.write("GET /env HTTP/1.1\r\nHost: a.test\r\n\r\n")
    facts = read_response(socket).json
    assert_equal "https", facts["rack.url_scheme"]
    assert_equal "https", facts["HTTP_X_FORWARDED_PROTO"]
    assert_equal "127.0.0.1", facts["REMOTE_ADDR"]
    socket.write("POST /env HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello")
    assert_equal "hello", read_response(socket).json["body"], "the same connection carries the next request"
    socket.write("GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGET /pid HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert_equal "hello\n", read_response(socket).body, "pipelined, in order"
    assert_match(/\A\d+\z/, read_response(socket).body)
  ensure
    socket&.close
  end

  def test_an_upload_and_a_download_pass_byte_exact
    upload = Random.bytes(20 << 20)
    socket = tls_connect("a.test")
    socket.write("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: #{upload.bytesize}\r\n\r\n")
    socket.write(upload)
    assert_equal "#{upload.bytesize} #{Digest::SHA256.hexdigest(upload)}", read_response(socket, 30).body
    socket.write("GET /bytes?#{30 << 20} HTTP/1.1\r\nHost: a.test\r\n\r\n")
    body = read_response(socket, 30).body
    assert_equal 30 << 20, body.bytesize
    assert_equal "b" * 100, body[-100..]
  ensure
    socket&.close
  end

  def test_a_static_file_leaves_through_tls_byte_exact
    socket = tls_connect("a.test")
    socket.write("GET /static.bin HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert_equal Digest::SHA256.hexdigest(@static), Digest::SHA256.hexdigest(read_response(socket, 30).body)
    socket.write("GET /static.bin HTTP/1.1\r\nHost: a.test\r\nRange: bytes=-10\r\n\r\n")
    part = read_response(socket)
    assert_equal [206, @static[-10..]], [part.status, part.body]
  ensure
    socket&.close
  end

  def test_sni_chooses_the_certificate_and_the_first_one_is_the_default
    { "b.test" => "b.test", "c.test" => "c.test", "a.test" => "a.test", "unknown.test" => "a.test",
      nil => "a.test" }.each do |asked, served|
      socket = tls_connect(asked)
      assert_equal "/CN=#{served}", socket.peer_cert.subject.to_s, "SNI #{asked.inspect}"
      socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert_equal 200, read_response(socket).status
    ensure
      socket&.close
    end
    socket = tls_connect("d.test", ssl_version: OpenSSL::SSL::TLS1_3_VERSION)
    assert_equal "/CN=d.test", socket.peer_cert.subject.to_s, "an Ed25519 certificate"
  ensure
    socket&.close
  end

  def test_tls_1_2_and_1_3_both_work
    [OpenSSL::SSL::TLS1_2_VERSION, OpenSSL::SSL::TLS1_3_VERSION].each do |version|
      socket = tls_connect("a.test", ssl_version: version)
      socket.write("GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
      assert_equal "hello\n", read_response(socket).body, "version #{version}"
      assert_equal "http/1.1", socket.alpn_protocol.to_s.then { |p| p.empty? ? "http/1.1" : p }
    ensure
      socket&.close
    end
  end

  def test_plain_http_to_the_tls_port_gets_a_clear_400
    response = raw_request("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", port: @tls_port)
    assert_equal 400, response.status
    assert_match(/plain HTTP request sent to the HTTPS port/, response.body)
  end

  def test_curl_and_openssl_s_client_are_served
    output = IO.popen(["curl", "-sS", "--http1.1", "--cacert", @bundle, "--resolve", "a.test:#{@tls_port}:127.0.0.1",
                       "https://a.test:#{@tls_port}/", "https://a.test:#{@tls_port}/pid"], err: %i[child out], &:read)
    assert $?.success?, output
    assert_match(/\Ahello\n\d+\z/, output, "two requests on curl's kept-alive connection")

    request = "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    output = IO.popen(["openssl", "s_client", "-connect", "127.0.0.1:#{@tls_port}", "-servername", "b.test",
                       "-tls1_2", "-CAfile", @bundle, "-verify_return_error", "-ign_eof"],
                      "r+", err: %i[child out]) do |io|
      io.write(request)
      io.read
    end
    assert_match(/Protocol\s*: TLSv1\.2/, output)
    assert_match(/Verify return code: 0 \(ok\)/, output)
    assert_match(/HTTP\/1\.1 200 OK.*hello/m, output)
  end

  def test_a_failed_handshake_is_the_clients_fault_logged_at_info
    socket = TCPSocket.new("127.0.0.1", @tls_port)
    socket.write("\x16\x03\x01\x00\x05hello".b) # a handshake record that is no ClientHello
    assert_closed_by_server(socket)
    @server.wait_until("the handshake's log line", 5) { @server.log.include?("TLS handshake failed") }
    line = @server.log.lines.find { |l| l.include?("TLS handshake failed") }
    assert line.start_with?("I,"), line
    refute_match(/error/i, line.sub(/\A.*?nightmare: /, ""))
    assert_equal 200, tls_get("a.test", "/").status, "the next client is fine"
  ensure
    socket&.close
  end

  def test_slow_tls_clients_do_not_delay_a_fast_one
    slow = Array.new(25) do |i|
      if i.even?
        TCPSocket.new("127.0.0.1", @tls_port) # connects, never says hello
      else
        tls_connect("a.test").tap { |s| s.write("GET / HTTP/1.1\r\nHost: a.test\r\n") } # a head that never ends
      end
    end
    10.times do
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      assert_equal 200, tls_get("a.test", "/").status
      assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :<, 2, "served at once"
    end
  ensure
    slow&.each(&:close)
  end

  def test_hup_loads_a_renewed_certificate_and_keeps_open_connections
    socket = tls_connect("a.test")
    socket.write("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert_equal 200, read_response(socket).status
    before = socket.peer_cert.to_der
    front = @server.front_pid
    TestCertificates.make(@certs, "a", ["a.test", "127.0.0.1"]) # renewed in place: new key, same paths
    write_bundle
    Process.kill(:HUP, @server.pid)
    @server.wait_until("the new certificates", 10) { @server.log.include?("nightmare front loaded new certificates") }
    assert_equal front, @server.front_pid, "the same front loaded them"
    socket.write("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert_equal 200, read_response(socket).status, "the open connection goes on"
    fresh = tls_connect("a.test")
    refute_equal before, fresh.peer_cert.to_der
    assert_equal OpenSSL::X509::Certificate.new(File.read(@pairs["a.test"][0])).to_der, fresh.peer_cert.to_der
  ensure
    socket&.close
    fresh&.close
  end

  def test_a_broken_certificate_on_hup_keeps_the_running_one
    File.write(@pairs["a.test"][0], "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    Process.kill(:HUP, @server.pid)
    @server.wait_until("the reload error", 10) { @server.log.include?("error reloading config_file") }
    assert_includes @server.log, "ssl_certificate #{@pairs['a.test'][0]}"
    assert_equal 200, tls_get("a.test", "/").status, "the running certificate still serves"
  end

  private

  def write_bundle
    @bundle = File.join(@certs, "bundle.pem")
    File.write(@bundle, @pairs.values.map { |cert, _| File.read(cert) }.join)
  end

  def tls_connect(hostname, **options)
    TestCertificates.connect(@tls_port, hostname, @bundle, **options)
  end

  def tls_get(hostname, path)
    socket = tls_connect(hostname)
    socket.write("GET #{path} HTTP/1.1\r\nHost: #{hostname}\r\nConnection: close\r\n\r\n")
    read_response(socket)
  ensure
    socket&.close
  end
end

# An ssl block that cannot work stops Unicorn at load time, naming the
# directive and the file, and saying what to do.
class TlsConfigErrorTest < Minitest::Test
  include ConfigRefusals
  def test_bad_ssl_blocks_fail_at_load_with_a_clear_message
    Dir.mktmpdir do |dir|
      cert, key = TestCertificates.make(dir, "good", ["good.test"])
      _, other_key = TestCertificates.make(dir, "other", ["other.test"])
      block = ->(inside) { "ssl do\n  listen '127.0.0.1:9'\n  #{inside}\nend\n" }
      pair = "ssl_certificate #{cert.inspect}; ssl_certificate_key #{key.inspect}"
      {
        "nightmare false\n#{block.call(pair)}" => /ssl needs the front: Unicorn alone has no TLS/,
        "nightmare true\n#{block.call("ssl_certificate '#{dir}/missing.pem'; ssl_certificate_key #{key.inspect}")}" =>
          %r{ssl_certificate #{dir}/missing.pem cannot be read},
        "nightmare true\n#{block.call("ssl_certificate #{cert.inspect}; ssl_certificate_key #{other_key.inspect}")}" =>
          /ssl_certificate_key #{other_key} is not the key of ssl_certificate/,
        "nightmare true\n#{block.call("#{pair}; ssl_ciphers 'HIGH:!aNULL'")}" =>
          /ssl_ciphers takes an OpenSSL cipher list, and rustls is not OpenSSL.*remove the line/,
        "nightmare true\n#{block.call("#{pair}; ssl_protocols 'TLSv1 TLSv1.2'")}" =>
          /rustls speaks only TLSv1.2 and TLSv1.3; drop TLSv1/,
        "nightmare true\n#{block.call("#{pair}; ssl_dhparam '/etc/dh.pem'")}" => /ssl_dhparam is for finite-field/,
        "nightmare true\n#{block.call("#{pair}; ssl_compression true")}" => /ssl_compression=true: TLS compression/,
        "nightmare true\n#{block.call("ssl_certificate #{cert.inspect}")}" =>
          /1 ssl_certificate but 0 ssl_certificate_key/,
        "nightmare true\nssl_certificate #{cert.inspect}" => /ssl_certificate must be called inside an `ssl' block/,
        "nightmare true\nhttp2 false" => /http2 must be called inside an `ssl' block/,
        "nightmare true\n#{block.call("#{pair}; http2 'no'")}" => /http2="no" not a boolean/,
        "nightmare true\nssl do\n  listen '#{dir}/u.sock'\n  #{pair}\nend\n" =>
          /listen ".*u.sock" is a UNIX socket; HTTPS needs a TCP listener/,
        "nightmare true\nlisten '127.0.0.1:9'\n#{block.call(pair)}" =>
          /ssl: listen "127.0.0.1:9" is declared outside the ssl block already; .*give the ssl block its own port/,
      }.then { |refusals| assert_configs_refused(dir, refusals) }
    end
  end
end

# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/test_certificates"
require "open3"

# HTTP/2 to clients that offer it on an ssl listener (ALPN h2), with real
# clients: curl and nghttp. Each stream reaches a worker as an ordinary
# HTTP/1.1 request, buffered whole, and its response comes back framed.
class Http2Test < Minitest::Test
  include HttpHelpers

  def setup
    @certs = Dir.mktmpdir("nightmare-h2")
    @cert, @key = TestCertificates.make(@certs, "a", ["a.test", "127.0.0.1"])
    @public = File.join(@certs, "public")
    FileUtils.mkdir_p(@public)
    @static = Random.bytes(6 << 20)
    File.binwrite(File.join(@public, "static.bin"), @static)
    @tls_port = LocalProcesses.free_port
  end

  def teardown
    @server&.stop
    FileUtils.rm_rf(@certs)
  end

  def start(ssl: "", nightmare: 'client_max_body_size: "64m"', workers: 2)
    @server = UnicornServer.new(workers: workers, nightmare: nightmare, config: <<~CONFIG).start
      try_files #{@public.inspect}
      #{TestCertificates.ssl_block(@tls_port, @cert, @key, ssl)}
    CONFIG
  end

  def url(path) = "https://127.0.0.1:#{@tls_port}#{path}"

  # curl over HTTP/2 (or what it negotiated): [status line, body, HTTP version].
  def curl(path, *options)
    out, err, status = Open3.capture3("curl", "-sk", "--http2", "--max-time", "30", "-w", "\n%{http_version}",
                                      *options, url(path), binmode: true)
    assert status.success?, "curl #{path} exited #{status.exitstatus}: #{err}"
    body, _, version = out.rpartition("\n")
    [body, version]
  end

  def test_curl_negotiates_h2_and_the_app_sees_an_https_request_from_the_client
    start(nightmare: 'access_log: "access.log"')
    body, version = curl("/env?x=1", "-H", "Cookie: a=1", "-H", "X-Forwarded-For: 6.6.6.6")
    assert_equal "2", version
    facts = JSON.parse(body)
    assert_equal %w[https https 127.0.0.1 GET], facts.values_at("rack.url_scheme", "HTTP_X_FORWARDED_PROTO",
                                                                "REMOTE_ADDR", "REQUEST_METHOD")
    assert_nil facts["HTTP_X_FORWARDED_FOR"], "what the front vouches for is its own"
    assert_equal "127.0.0.1:#{@tls_port}", facts["HTTP_HOST"], ":authority is the Host"
    body, = curl("/env", "--data-binary", "hello=world")
    assert_equal "hello=world", JSON.parse(body)["body"]
    log = File.join(@server.dir, "access.log")
    @server.wait_until("the access log lines", 5) { File.exist?(log) && File.read(log).lines.size >= 2 }
    assert_match %r{"GET /env\?x=1 HTTP/2\.0" 200 }, File.read(log)
  end

  def test_an_upload_and_a_download_pass_byte_exact
    start
    upload = Random.bytes(20 << 20)
    file = File.join(@certs, "upload.bin")
    File.binwrite(file, upload)
    body, = curl("/upload", "--data-binary", "@#{file}")
    assert_equal "#{upload.bytesize} #{Digest::SHA256.hexdigest(upload)}", body
    # Without a length (chunked on the way to the worker).
    body, = curl("/upload", "-H", "Transfer-Encoding:", "-T", file, "-X", "POST")
    assert_equal "#{upload.bytesize} #{Digest::SHA256.hexdigest(upload)}", body
    body, = curl("/static.bin")
    assert_equal @static.bytesize, body.bytesize
    assert body == @static, "try_files: byte exact"
    body, = curl("/bytes?#{10 << 20}")
    assert_equal "b" * (10 << 20), body, "a worker's 10 MiB"
  end

  def curl_status(path, *options)
    out, err, status = Open3.capture3("curl", "-sk", "--http2", "--max-time", "30", "-o", "/dev/null",
                                      "-w", "%{http_code}", *options, url(path))
    assert status.success?, "curl #{path}: #{err}"
    out
  end

  def test_head_and_conditional_requests_of_files_are_answered_as_for_http1
    start
    head, = curl("/static.bin", "-I")
    assert_match(/^HTTP\/2 200/, head)
    assert_match(/^content-length: #{@static.bytesize}\r?$/, head)
    etag = head[/^etag: (\S+)/, 1]
    refute_nil etag
    assert_equal "304", curl_status("/static.bin", "-H", "If-None-Match: #{etag}")
    part, = curl("/static.bin", "-r", "0-99")
    assert_equal @static[0, 100], part, "206 with the range"
  end

  def test_many_streams_on_one_connection_are_all_served
    start
    out, err, status = Open3.capture3("nghttp", "-n", "-s", "-m", "60", url("/sleep?0.02"))
    assert status.success?, err
    # nghttp's statistics: a line per stream, "id responseEnd requestStart
    # process code size path".
    codes = out.lines.filter_map { |line| line.split[4] if line =~ %r{\A\s*\d+\s+\+.*/sleep} }
    assert_equal ["200"] * 60, codes, out
  end

  # A Unicorn has two workers here; one connection opens 100 slow streams.
  # Its share (requests_per_address, which for a connection from an
  # address not counted, as 127.0.0.1, is the connection's own) keeps the
  # rest of them in its own line, so another client waits for one slow
  # request at most, not for a hundred.
  def test_one_connections_many_slow_streams_leave_room_for_another_client
    start
    slow = Thread.new { Open3.capture3("nghttp", "-n", "-m", "100", url("/sleep?0.4")) }
    @server.wait_until("the slow streams in", 10) { figures["http2_streams"] >= 100 }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_match(/\A\d+\z/, curl("/pid").first)
    waited = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    assert_operator waited, :<, 1.9, "the fresh client waited for one slow request at most (#{waited.round(2)} s)"
    _, err, status = slow.value
    assert status.success?, err
    assert_operator figures["requests_waited_for_own_address"], :>=, 80
  end

  # Prior knowledge on a plain listener, only when asked: off, the preface
  # gets 505 as before.
  def test_cleartext_http2_only_with_http2_cleartext
    start(nightmare: "http2_cleartext: true")
    out, err, status = Open3.capture3("curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}",
                                      "http://127.0.0.1:#{@server.port}/")
    assert status.success?, err
    assert_equal "hello\n\n2", out
    http1, = Open3.capture3("curl", "-s", "http://127.0.0.1:#{@server.port}/")
    assert_equal "hello\n", http1, "HTTP/1.1 on the same listener"
    @server.stop
    start
    out, = Open3.capture3("curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                          "http://127.0.0.1:#{@server.port}/")
    refute_equal "200", out, "off by default"
  end

  def test_http2_false_keeps_the_block_on_http1
    start(ssl: "http2 false")
    _, version = curl("/")
    assert_equal "1.1", version
  end

  # HUP with new settings replaces the front: the old one says GOAWAY and
  # finishes the stream in flight, the new one takes the next connection.
  def test_a_front_replaced_on_hup_finishes_its_streams_and_the_next_front_serves
    start
    mark = File.join(@certs, "held-by")
    nghttp = Thread.new { Open3.capture3("nghttp", "-nv", url("/hold?seconds=2&mark=#{mark}")) }
    @server.wait_until("the request in a worker", 10) { File.exist?(mark) }
    config = File.read(@server.config_path).sub(/^nightmare .*$/, 'nightmare client_max_body_size: "65m"')
    File.write(@server.config_path, config)
    Process.kill(:HUP, @server.pid)
    @server.wait_until("the new front", 20) { @server.log.scan("nightmare front ready").size == 2 }
    body, version = curl("/pid")
    assert_equal ["2", true], [version, body.match?(/\A\d+\z/)], "the next connection, through the new front"
    out, = nghttp.value
    assert_match(/recv GOAWAY frame/, out, "the old front said it goes away")
    assert_match(/:status: 200/, out, "and finished the stream in flight")
  end

  # A binary upgrade: after USR2 the old master's QUIT makes its front say
  # GOAWAY and finish the stream in flight; the new generation serves.
  def test_usr2_then_quit_of_the_old_master_finishes_its_streams_and_the_new_one_serves
    start
    old_master = @server.pid
    mark = File.join(@certs, "held-by")
    nghttp = Thread.new { Open3.capture3("nghttp", "-nv", url("/hold?seconds=4&mark=#{mark}")) }
    @server.wait_until("the request in a worker", 10) { File.exist?(mark) }
    Process.kill(:USR2, old_master)
    new_master = @server.wait_for_new_master(old_master, workers: 2)
    Process.kill(:QUIT, old_master)
    out, = nghttp.value
    assert_match(/recv GOAWAY frame/, out, "the old front said it goes away")
    assert_match(/:status: 200/, out, "and finished the stream in flight")
    Timeout.timeout(30) { Process.waitpid(old_master) }
    @server.adopt(new_master)
    body, version = curl("/pid")
    assert_equal "2", version
    assert_includes LocalProcesses.children_of(new_master), Integer(body), "a worker of the new master answered"
  end

  def test_quit_lets_streams_in_flight_finish_and_says_goaway
    start
    mark = File.join(@certs, "held-by")
    nghttp = Thread.new { Open3.capture3("nghttp", "-nv", url("/hold?seconds=2&mark=#{mark}")) }
    @server.wait_until("the request in a worker", 10) { File.exist?(mark) }
    Process.kill(:QUIT, @server.pid)
    out, = nghttp.value
    assert_match(/recv GOAWAY frame/, out, "the front said it goes away")
    assert_match(/:status: 200/, out, "the stream in flight finished")
  end
end

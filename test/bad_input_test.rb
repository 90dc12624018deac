# frozen_string_literal: true

require_relative "test_helper"

# Every malformed, ambiguous, oversized or too slow request is answered by
# the front itself: it never reaches a worker, and the next request is fine.
class BadInputTest < Minitest::Test
  include HttpHelpers

  LIMITS = <<~CONFIG
    nightmare client_max_body_size: "64k", client_body_buffer_size: "4k",
              client_header_timeout: 1, client_body_timeout: 1,
              large_client_header_buffers: [4, "1k"], client_max_headers: 20
  CONFIG

  def setup
    @server = UnicornServer.new(workers: 1, nightmare: "", config: LIMITS).start
    @requests_before = app_request_count
  end

  def teardown
    @server.stop
  end

  BAD_REQUESTS = {
    "Content-Length with Transfer-Encoding" =>
      [400, "POST /env HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
    "differing Content-Lengths" =>
      [400, "POST /env HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"],
    "bad chunk size" =>
      [400, "POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"],
    "a bare ; as chunk extension" =>
      [400, "POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n"],
    "a chunk extension that is no token" =>
      [400, "POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a b\r\nhello\r\n0\r\n\r\n"],
    "whitespace after a chunk size with no extension" =>
      [400, "POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"],
    "chunk size line ended by a bare LF" =>
      [400, "POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"],
    "unsupported transfer coding" =>
      [501, "POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"],
    "obs-fold" => [400, "GET /env HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n"],
    "NUL in a header" => [400, "GET /env HTTP/1.1\r\nHost: t\r\nX-Nul: a\0b\r\n\r\n"],
    "control character in the target" => [400, "GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n"],
    "bad request line" => [400, "NONSENSE\r\n\r\n"],
    "HTTP/2 in plain text" => [505, "GET / HTTP/2.0\r\nHost: t\r\n\r\n"],
    "missing Host on HTTP/1.1" => [400, "GET /env HTTP/1.1\r\n\r\n"],
    "duplicate Host" => [400, "GET /env HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"],
    "URI too long" => [414, "GET /#{'a' * 2000} HTTP/1.1\r\nHost: t\r\n\r\n"],
    "header line too long" => [431, "GET / HTTP/1.1\r\nHost: t\r\nCookie: #{'c' * 2000}\r\n\r\n"],
    "head too large" => [431, "GET / HTTP/1.1\r\nHost: t\r\n#{(1..8).map { |i| "X-#{i}: #{'v' * 600}\r\n" }.join}\r\n"],
    "too many headers" => [431, "GET / HTTP/1.1\r\nHost: t\r\n#{(1..25).map { |i| "X-#{i}: v\r\n" }.join}\r\n"],
    "HTTP version with a leading zero" => [400, "GET /env HTTP/01.1\r\nHost: t\r\n\r\n"],
    "Host with a path" => [400, "GET /env HTTP/1.1\r\nHost: t/x\r\n\r\n"],
    "Host with userinfo" => [400, "GET /env HTTP/1.1\r\nHost: u@t\r\n\r\n"],
    "empty Host" => [400, "GET /env HTTP/1.1\r\nHost: \r\n\r\n"],
    "Host list" => [400, "GET /env HTTP/1.1\r\nHost: a, b\r\n\r\n"],
    "Host with a bad port" => [400, "GET /env HTTP/1.1\r\nHost: t:99999\r\n\r\n"],
    "raw UTF-8 in the target" => [400, "GET /caf\u00e9 HTTP/1.1\r\nHost: t\r\n\r\n"],
    "unknown expectation" => [417, "POST /env HTTP/1.1\r\nHost: t\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx"],
  }.freeze

  # Waiting for the rest of a head would end in a 408 after
  # client_header_timeout; a 400 means the line was judged as it came.
  def test_an_http_0_9_request_line_is_answered_at_once
    response = raw_request("GET /\r\n")
    assert_equal 400, response.status
  end

  def test_each_bad_request_gets_its_status_and_never_reaches_a_worker
    BAD_REQUESTS.each do |name, (status, raw)|
      response = raw_request(raw)
      assert_equal status, response.status, "#{name}: #{response.body}"
      assert_equal "close", response.headers["connection"], name
      assert_equal 200, get("/").status, "a good request right after #{name}"
    end
    good_requests = BAD_REQUESTS.size
    assert_equal @requests_before + good_requests + 1, app_request_count, "only the good requests reached the app"
  end

  def test_raw_utf8_in_the_target_is_400_and_harms_nobody
    front = @server.front_pid
    response = raw_request("GET /aaaaa\u00e9?q=\u00e9 HTTP/1.1\r\nHost: t\r\n\r\n".b)
    assert_equal 400, response.status, "RFC 3986: a target is ASCII; UTF-8 must be percent-encoded"
    assert_match(/percent-encode/, response.body)
    assert_equal 200, get("/%C3%A9").status, "the same target percent-encoded passes"
    assert_equal @requests_before + 2, app_request_count, "the raw one never reached the app"
    assert_equal front, @server.front_pid, "the front is the same process"
  end

  def test_body_over_client_max_body_size_is_413_without_reading_it
    socket = connect(@server.port)
    socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{10 * 1024 * 1024}\r\n\r\n")
    # The answer comes while the client has sent none of its 10 MiB.
    response = read_response(socket, 5)
    assert_equal 413, response.status
    assert_equal @requests_before + 1, app_request_count
  ensure
    socket&.close
  end

  def test_chunked_body_over_the_limit_is_413_even_mid_upload
    socket = connect(@server.port)
    socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = "x" * 16_384
    response = nil
    100.times do
      socket.write("#{chunk.bytesize.to_s(16)}\r\n#{chunk}\r\n")
    rescue Errno::EPIPE, Errno::ECONNRESET
      break
    end
    response = read_response(socket, 5)
    assert_equal 413, response.status
  ensure
    socket&.close
  end

  def test_slow_head_gets_408
    socket = connect(@server.port)
    socket.write("GET / HTTP/1.1\r\nHost: t\r\n")
    response = read_response(socket, 5)
    assert_equal 408, response.status
    # The front's log line travels through its log pipe: it may trail the reply.
    line = /client 127\.0\.0\.1 sent no complete request head within client_header_timeout \(1s\); answered 408/
    @server.wait_until("the 408 log line", 5) { @server.log.match?(line) }
    assert_match(/INFO -- : nightmare: #{line.source}/, @server.log, "a slow client is logged at info")
    refute_match(/error/i, @server.log.lines.grep(/client_header_timeout/).join, "a slow client is not an error")
  ensure
    socket&.close
  end

  def test_slowloris_trickling_a_head_still_gets_408
    socket = connect(@server.port)
    request = "GET / HTTP/1.1\r\nHost: t\r\nX-Padding: #{'p' * 200}\r\n\r\n"
    status = nil
    request.each_char do |char|
      socket.write(char)
      sleep 0.02
      next unless socket.wait_readable(0)

      status = read_response(socket, 1).status
      break
    rescue Errno::EPIPE, Errno::ECONNRESET
      break
    end
    status ||= read_response(socket, 5).status
    assert_equal 408, status, "a head that keeps trickling is cut off by the total header timeout"
  ensure
    socket&.close
  end

  def test_stalled_body_gets_408
    socket = connect(@server.port)
    socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
    response = read_response(socket, 5)
    assert_equal 408, response.status
    assert_equal @requests_before + 1, app_request_count
  ensure
    socket&.close
  end

  def test_client_vanishing_mid_body_harms_nobody
    5.times do
      socket = connect(@server.port)
      socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 50000\r\n\r\n#{'x' * 20_000}")
      socket.close
    end
    assert_equal 200, get("/").status
    assert_equal @requests_before + 2, app_request_count
  end

  private

  def app_request_count
    Integer(get("/count").body)
  end
end

# client_body_min_rate: a body that never pauses for client_body_timeout but
# averages less than the minimum rate is cut off once that timeout has
# passed since it began.
class BodyMinRateTest < Minitest::Test
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 1, nightmare: 'client_body_timeout: 3, client_body_min_rate: "1k"').start
  end

  def teardown
    @socket&.close
    @server.stop
  end

  def test_a_body_trickling_below_the_minimum_rate_gets_408
    @socket = connect(@server.port)
    @socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n")
    answered = nil
    60.times do # 50 bytes a second, for up to 12 s
      break if (answered = @socket.wait_readable(0.2))

      @socket.write("x" * 10)
    end
    assert answered, "the front answered while the body still trickled"
    assert_equal 408, read_response(@socket, 5).status
    @server.wait_until("the log line", 5) { @server.log.include?("slower than client_body_min_rate (1024 bytes/s") }
    assert_equal "1", get("/count").body, "the trickled request never reached the app: this one is its first"
  rescue Errno::EPIPE, Errno::ECONNRESET
    flunk "the connection was dropped instead of answered"
  end
end


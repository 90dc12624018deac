# frozen_string_literal: true

require_relative "test_helper"

# Responses reach clients at the clients' pace, not the workers': what a
# slow client cannot take waits in the front, streams pass promptly.
class ResponseTest < Minitest::Test
  include HttpHelpers

  MIB = 1 << 20

  def setup
    @server = UnicornServer.new(workers: 1, app: "responses.ru").start
  end

  def teardown
    @slow&.close
    @server.stop
  end

  def test_slow_reader_of_200_mib_does_not_hold_the_only_worker
    @slow = connect(@server.port)
    @slow.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 65_536)
    @slow.write("GET /big?mib=200 HTTP/1.1\r\nHost: t\r\n\r\n")
    received = read_slowly(@slow, 65_536, seconds: 2)
    assert_operator received, :>, 0

    # The one worker is free again although the client has most of 200 MiB to go.
    response = get("/pid", {}, timeout: 30)
    assert_equal 200, response.status
    received += read_slowly(@slow, 65_536, seconds: 1)
    assert_operator received, :<, 20 * MIB, "the slow client is still far from done"

    peak = LocalProcesses.peak_rss_kib(@server.front_pid)
    assert_operator peak, :<, 64 * 1024, "front peak RSS #{peak} KiB"
    assert_operator spooled_files, :>=, 1, "the rest of the response waits in a temp file"
  end

  def test_client_abort_frees_the_spool_and_the_worker
    socket = connect(@server.port)
    socket.write("GET /big?mib=100 HTTP/1.1\r\nHost: t\r\n\r\n")
    read_slowly(socket, 65_536, seconds: 1)
    @server.wait_until("the response to spool", 20) { spooled_files >= 1 }
    socket.close
    @server.wait_until("the spool to be freed", 10) { spooled_files.zero? }
    assert_equal 200, get("/pid", {}, timeout: 10).status, "the worker is free"
  end

  def test_streaming_body_reaches_the_client_before_it_is_finished
    flag = File.join(@server.dir, "stream-flag")
    socket = connect(@server.port)
    socket.write("GET /stream?flag=#{flag} HTTP/1.1\r\nHost: t\r\n\r\n")
    first = read_until(socket, "first\n")
    assert_match(/Transfer-Encoding: chunked/i, first, "a close-delimited stream is re-chunked")
    File.write(flag, "go") # only now does the app write its last chunk
    assert_includes read_until(socket, "0\r\n\r\n"), "last\n"
  ensure
    socket&.close
  end

  def test_sse_without_buffering_streams_and_hides_the_header
    flag = File.join(@server.dir, "sse-flag")
    socket = connect(@server.port)
    socket.write("GET /sse?flag=#{flag} HTTP/1.1\r\nHost: t\r\n\r\n")
    head_and_first = read_until(socket, "data: 1\n\n")
    refute_match(/x-accel-buffering/i, head_and_first)
    File.write(flag, "go")
    assert_includes read_until(socket, "0\r\n\r\n"), "data: 2\n\n"
  ensure
    socket&.close
  end

  def test_head_204_and_304_have_no_body_and_keep_the_connection
    socket = connect(@server.port)
    socket.write("HEAD /big?mib=3 HTTP/1.1\r\nHost: t\r\n\r\n")
    response = read_response(socket, 10, head: true)
    assert_equal (3 * MIB).to_s, response.headers["content-length"]
    %w[204 304].each do |status|
      socket.write("GET /status/#{status} HTTP/1.1\r\nHost: t\r\n\r\n")
      response = read_response(socket, 10)
      assert_equal Integer(status), response.status
      assert_equal "", response.body
    end
    socket.write("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal "ok\n", read_response(socket).body, "nothing stray was left on the connection"
  ensure
    socket&.close
  end

  def test_upgrade_becomes_a_two_way_tunnel
    socket = connect(@server.port)
    socket.write("GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
    head = read_until(socket, "\r\n\r\n")
    assert_match(%r{\AHTTP/1.1 101 Switching Protocols\r\n}, head)
    assert_match(/^Upgrade: echo\r$/, head)
    assert_match(/^Connection: Upgrade\r$/, head)
    %w[hello world].each do |word|
      socket.write("#{word}\n")
      assert_equal "#{word}\n", read_until(socket, "\n")
    end
    socket.write("bye\n")
    assert_equal "bye\n", read_until(socket, "\n")
    assert_closed_by_server(socket)
    assert_equal 200, get("/pid", {}, timeout: 10).status, "the worker is free after the tunnel"
  ensure
    socket&.close
  end

  def test_upgrade_nobody_asked_for_is_a_502
    response = raw_request("GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal 502, response.status
  end

  # Unicorn writes "HTTP/1.1 99" for a status it has no name for: the worker
  # is alive and well, so the log must not blame a crash.
  def test_a_malformed_status_line_is_a_502_logged_as_malformed
    response = get("/status/99")
    assert_equal 502, response.status
    assert_includes response.body, "malformed"
    @server.wait_until("the log line", 5) { @server.log.include?("cannot pass on (malformed response head)") }
    refute_match(/killed or crashed/, @server.log)
    assert_equal 200, get("/pid").status
  end

  private

  # Reads about +rate+ bytes a second for +seconds+; returns bytes read.
  def read_slowly(socket, rate, seconds:)
    total = 0
    (seconds * 10).times do
      chunk = socket.read_nonblock(rate / 10, exception: false)
      total += chunk.bytesize if chunk.is_a?(String)
      sleep 0.1
    end
    total
  end

  def read_until(socket, marker, timeout: 10)
    data = +""
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until data.include?(marker)
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      flunk "no #{marker.inspect} within #{timeout}s, got #{data.inspect}" if left <= 0
      data << socket.readpartial(65_536) if socket.wait_readable(left)
    end
    data
  end

  # Unlinked temp files the front holds open.
  def spooled_files
    Dir.glob("/proc/#{@server.front_pid}/fd/*").count do |fd|
      File.readlink(fd).end_with?("(deleted)")
    rescue Errno::ENOENT
      false
    end
  end
end

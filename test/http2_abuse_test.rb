# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/test_certificates"
require "open3"

# HTTP/2 abuse, frame by frame (test/support/h2_abuse.py, with Debian's
# python3-h2 libraries): each attack ends as the protection rule says,
# costs the front little, and a fresh client is served meanwhile.
class Http2AbuseTest < Minitest::Test
  include HttpHelpers

  PYTHON = "/usr/bin/python3"
  SCRIPT = File.join(__dir__, "support", "h2_abuse.py")
  ENHANCE_YOUR_CALM = 11

  def setup
    @certs = Dir.mktmpdir("nightmare-h2-abuse")
    @cert, @key = TestCertificates.make(@certs, "a", ["a.test", "127.0.0.1"])
    @tls_port = LocalProcesses.free_port
    start
  end

  def start(workers: 2, nightmare: "")
    settings = ['temp_path_max_size: "512m"', nightmare].reject(&:empty?).join(", ")
    @server = UnicornServer.new(workers: workers, nightmare: settings,
                                config: TestCertificates.ssl_block(@tls_port, @cert, @key)).start
  end

  def teardown
    @server&.stop
    FileUtils.rm_rf(@certs)
  end

  def attack(scenario, argument)
    out, err, status = Open3.capture3(PYTHON, SCRIPT, scenario, "127.0.0.1", @tls_port.to_s, argument.to_s)
    assert status.success?, "#{scenario}: #{err}"
    JSON.parse(out.lines.last)
  end

  # A fresh HTTP/2 client, served within a second.
  def assert_fresh_client_served
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, err, status = Open3.capture3("curl", "-sk", "--http2", "--max-time", "5", "https://127.0.0.1:#{@tls_port}/")
    assert status.success?, err
    assert_equal "hello\n", out
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :<, 1
  end

  def test_rapid_reset_goes_away_and_reset_streams_never_reach_a_worker
    outcome = attack("rapid_reset", 5000)
    assert_equal ENHANCE_YOUR_CALM, outcome["goaway"], outcome.inspect
    assert_operator outcome["responses"], :<=, 2, "streams reset at once are not answered"
    handed_off = figures["requests_handed_off"]
    assert_operator handed_off, :<=, 10, "a worker saw almost none of the 5000 (#{handed_off})"
    assert_operator figures["http2_streams_reset_by_client"], :>, 200
    assert_fresh_client_served
  end

  def test_endless_continuations_go_away_at_once
    outcome = attack("continuation_flood", 100_000)
    assert_equal ENHANCE_YOUR_CALM, outcome["goaway"], outcome.inspect
    assert_operator outcome["seconds"], :<, 2
    assert_fresh_client_served
  end

  def test_a_ping_flood_is_answered_within_an_allowance_then_cut
    outcome = attack("ping_flood", 100_000)
    assert_equal ENHANCE_YOUR_CALM, outcome["goaway"], outcome.inspect
    assert_fresh_client_served
  end

  def test_a_header_list_past_the_limit_gets_431_and_the_connection_goes_on
    outcome = attack("big_header_list", 40_000)
    assert_equal({ "1" => "431", "3" => "200" }, outcome["statuses"])
    assert_nil outcome["goaway"]
  end

  # A connection that opens no stream has client_header_timeout, as an
  # HTTP/1.1 one that sends no request: then GOAWAY, and it is closed.
  def test_a_connection_that_opens_no_stream_goes_away_after_client_header_timeout
    @server.stop
    start(nightmare: "client_header_timeout: 1")
    outcome = attack("idle", 6)
    assert_equal 0, outcome["goaway"], "GOAWAY NO_ERROR: #{outcome.inspect}"
    assert_operator outcome["seconds"], :<, 3, "within a tick of the timeout"
    assert_operator outcome["seconds"], :>=, 0.9
  end

  # Once it has served a stream, keepalive_timeout, as for HTTP/1.1.
  def test_a_connection_idle_after_its_streams_goes_away_after_keepalive_timeout
    @server.stop
    start(nightmare: "client_header_timeout: 20, keepalive_timeout: 1")
    outcome = attack("served_then_idle", 6)
    assert_equal [0, 1], outcome.values_at("goaway", "responses"), outcome.inspect
    assert_operator outcome["seconds"], :<, 3
  end

  # At max_connections, an HTTP/2 connection idle after its streams is
  # closed for a newcomer, as an idle HTTP/1.1 keep-alive one is.
  def test_an_idle_http2_connection_makes_room_at_max_connections
    @server.stop
    start(nightmare: "max_connections: 1, keepalive_timeout: 60")
    idle = Open3.popen3(PYTHON, SCRIPT, "served_then_idle", "127.0.0.1", @tls_port.to_s, "8")
    sleep 1.5
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, err, status = Open3.capture3("curl", "-sk", "--http1.1", "--max-time", "5", "https://127.0.0.1:#{@tls_port}/")
    assert status.success?, err
    assert_equal "hello\n", out
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :<, 2, "no wait for keepalive_timeout"
    outcome = JSON.parse(idle[1].read.lines.last)
    assert_equal 1, outcome["responses"], "the idle connection had been served, then closed: #{outcome.inspect}"
    assert_operator outcome["seconds"], :<, 5, "closed for room, not after 60 s"
  ensure
    idle&.each { |io| io.close unless !io.respond_to?(:close) || io.closed? }
  end

  def test_trailers_are_dropped_and_a_pseudo_header_among_them_resets_the_stream
    outcome = attack("trailers", 0)
    body = "5 #{Digest::SHA256.hexdigest('hello')}"
    assert_equal({ "1" => body }, outcome["bodies"], "the body reached the app, the trailers did not matter")
    assert_equal [3], outcome["reset_streams"]
    assert_nil outcome["goaway"]
  end

  # One worker; eight slow streams: the connection's share (two) is handed
  # to the worker's accept queue, the others wait in the connection's own
  # line. Reset, those never reach the worker (before: five of the eight ran).
  def test_streams_reset_while_they_wait_never_reach_a_worker
    @server.stop
    start(workers: 1)
    attack("reset_waiting", 8)
    sleep 1.2
    share = figures["requests_per_address"]
    ran = Integer(get("/count").body) - 1
    assert_operator ran, :<=, share, "only the #{share} already passed to the worker ran, of 8"
  end

  # 16 streams of 4 MiB on a window that never opens: the responses wait
  # in temp files, the workers are free, the front's memory stays flat.
  def test_a_reader_that_opens_no_window_costs_temp_files_not_memory_or_workers
    before = LocalProcesses.peak_rss_kib(@server.front_pid)
    Open3.popen3(PYTHON, SCRIPT, "zero_window", "127.0.0.1", @tls_port.to_s, "16") do |stdin, stdout, _err, _thread|
      seen = JSON.parse(stdout.gets)
      assert_equal 0, seen["data_bytes"], "no DATA on a closed window"
      assert_equal 16, seen["responses"], "every head came (HEADERS is not flow-controlled)"
      @server.wait_until("the responses in temp files", 10) { figures["temp_file_bytes"] >= 16 * (4 << 20) * 0.9 }
      @server.wait_until("the workers free", 10) { figures["in_flight"].zero? }
      grown = LocalProcesses.peak_rss_kib(@server.front_pid) - before
      assert_operator grown, :<, 16 * 1024, "front RSS grew #{grown} KiB for 64 MiB held"
      assert_fresh_client_served
      stdin.puts
    end
  end

  # Wide windows and a socket never read: a fast client's bytes go through
  # memory, but once the socket blocks the rest must go to temp files, or
  # the workers would wait on this client. When it leaves (with frames
  # still unsent), its streams end and their temp files go.
  def test_a_client_that_stops_reading_its_socket_costs_temp_files_not_workers
    Open3.popen3(PYTHON, SCRIPT, "not_reading", "127.0.0.1", @tls_port.to_s, "8") do |stdin, stdout, _err, _thread|
      assert_equal 8, JSON.parse(stdout.gets)["sent"]
      @server.wait_until("the workers free", 10) do
        figures["in_flight"].zero? && figures["temp_file_bytes"].positive?
      end
      assert_fresh_client_served
      stdin.puts
    end
    @server.wait_until("the streams' temp files gone with their client", 5) { figures["temp_file_bytes"].zero? }
  end
end

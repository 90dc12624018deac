# frozen_string_literal: true

require_relative "test_helper"

# access_log: a line per request, in nginx's combined format followed by
# the request's time and its wait for a worker, written by the front;
# reopened on USR1 like Unicorn's own logs.
class AccessLogTest < Minitest::Test
  include HttpHelpers

  TIME_LOCAL = %r{\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}}

  def teardown
    @clients&.each(&:kill)
    @server&.stop
  end

  def test_every_request_gets_a_combined_line_with_its_times
    start(nightmare: 'access_log: "access.log"')
    response = get("/bytes?1000", { "Referer" => "http://example.com/from", "User-Agent" => 'agent "one"/1.0' })
    assert_equal 200, response.status
    assert_equal 400, raw_request("GET /%zz\u00e9 HTTP/1.1\r\nHost: t\r\n\r\n".b).status
    lines = access_lines { |found| found.size >= 2 }
    line = /\A127\.0\.0\.1 - - \[#{TIME_LOCAL}\] "GET \/bytes\?1000 HTTP\/1\.1" 200 (\d+) "http:\/\/example\.com\/from" "agent \\x22one\\x22\/1\.0" (\d+\.\d{3}) (\d+\.\d{3})\n\z/
    match = line.match(lines[0])
    assert match, "a combined line, quotes escaped: #{lines[0].inspect}"
    assert_equal 1000, Integer(match[1]), "$body_bytes_sent is the body's length"
    assert_operator Float(match[2]), :<, 5, "$request_time in seconds"
    assert_equal "0.000", match[3], "it never waited for a worker"
    assert_match(/\A127\.0\.0\.1 - - \[#{TIME_LOCAL}\] "-" 400 \d+ "-" "-" /, lines[1],
                 "a head the front refused is logged too, without a request line")
  end

  def test_queue_time_shows_the_wait_for_a_busy_worker_and_a_client_that_left_is_499
    start(workers: 1, nightmare: 'in_flight_per_worker: 1, access_log: "access.log", ' \
                                 'access_log_format: "$status $request_uri $queue_time $upstream_response_time"',
          config: 'status_path "/_nightmare"')
    @clients = [Thread.new { get(hold(1.5), {}, timeout: 20) }]
    @server.wait_until("the only worker busy", 5) { held_worker }
    waiting = Thread.new { get("/env?waited", {}, timeout: 20) }
    gone = connect(@server.port)
    gone.write("GET /env?left HTTP/1.1\r\nHost: t\r\n\r\n")
    @server.wait_until("both in the front's queue", 5) { get("/_nightmare").json["queued"] == 2 }
    gone.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack("ii")) # a reset: it left
    gone.close
    assert_equal 200, waiting.value.status
    lines = access_lines { |found| found.grep(%r{\A(499|200) /(env|hold)}).size >= 3 }
    assert_includes lines, "499 /env?left 0.000 -\n", "nginx's 499: the client left before its response"
    held = lines.grep(%r{\A200 /hold}).first
    assert_match(/\A200 \S+ 0\.000 (\d+\.\d{3})\n\z/, held)
    assert_operator Float(held.split.last), :>=, 1.4, "$upstream_response_time: the worker held it 1.5 s"
    waited = lines.grep(%r{\A200 /env\?waited}).first
    assert waited, lines.inspect
    assert_operator Float(waited.split[2]), :>=, 0.9, "$queue_time: it waited for the held request"
  end

  def test_usr1_reopens_the_access_log_where_it_was_moved_from
    start(nightmare: 'access_log: "access.log"')
    assert_equal 200, get("/?before").status
    access_lines { |found| found.size >= 1 }
    File.rename(log_path, "#{log_path}.1")
    Process.kill(:USR1, @server.pid)
    @server.wait_until("the front to reopen its logs", 10) { @server.log.include?("nightmare front: log files reopened") }
    assert_equal 200, get("/?after").status
    @server.wait_until("the new file's line", 5) { File.exist?(log_path) && File.read(log_path).include?("GET /?after") }
    old = File.read("#{log_path}.1")
    assert_includes old, "GET /?before"
    refute_includes old, "GET /?after", "the moved file gets nothing more"
  end

  private

  def start(nightmare:, workers: 2, config: "")
    @server = UnicornServer.new(workers: workers, nightmare: nightmare, config: config).start
  end

  def log_path = File.join(@server.dir, "access.log")

  # The log's lines, once the block finds what it waits for in them.
  def access_lines
    lines = nil
    @server.wait_until("the access log lines looked for", 10) do
      yield(lines = File.exist?(log_path) ? File.readlines(log_path) : [])
    end
    lines
  end
end

# frozen_string_literal: true

require_relative "test_helper"

# Unicorn's signals keep their meaning with the front in place.
class SignalsTest < Minitest::Test
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 2, config: "timeout 3").start
  end

  def teardown
    @server.stop
  end

  def test_quit_finishes_requests_in_progress_then_exits_front_before_workers
    slow = Thread.new { get(hold(1), {}, timeout: 15) }
    @server.wait_until("the request to reach a worker", 5) { held_worker }
    Process.kill(:QUIT, @server.pid)
    assert_equal 200, slow.value.status, "the request accepted before QUIT is answered"
    Timeout.timeout(20) { Process.waitpid(@server.pid) }
    log = @server.log
    front_gone = log.index("nightmare front exited")
    workers_gone = log.index(/reaped #<Process::Status: pid \d+ exit 0> worker=/)
    refute_nil front_gone
    assert_operator front_gone, :<, workers_gone, "the front stops while workers can still answer it"
    assert_match(/master complete/, log)
  end

  def test_quit_lets_a_slow_upload_finish
    body = "s" * 30_000
    socket = connect(@server.port)
    socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{body.bytesize}\r\n\r\n#{body[0, 10_000]}")
    @server.wait_until("the front reading the upload", 5) { figures["reading"] >= 1 }
    Process.kill(:QUIT, @server.pid)
    @server.wait_until("the front to stop", 5) { @server.log.include?("nightmare front stopping: no new clients") }
    socket.write(body[10_000, 10_000])
    sleep 0.3 # a slow client's pace
    socket.write(body[20_000..])
    response = read_response(socket, 15)
    assert_equal "#{body.bytesize} #{Digest::SHA256.hexdigest(body)}", response.body
    assert_equal "close", response.headers["connection"], "no keep-alive while stopping"
    Timeout.timeout(20) { Process.waitpid(@server.pid) }
  ensure
    socket&.close
  end

  def test_quit_lets_a_slow_reader_get_its_whole_response
    size = 3_000_000
    socket = connect(@server.port)
    socket.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 65_536)
    socket.write("GET /bytes?#{size} HTTP/1.1\r\nHost: t\r\n\r\n")
    received = socket.readpartial(100_000).bytesize
    Process.kill(:QUIT, @server.pid)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
    while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      chunk = socket.read_nonblock(100_000, exception: false)
      break if chunk.nil?

      received += chunk.bytesize if chunk.is_a?(String)
      sleep 0.1 # about 1 MB/s: the front finishes sending after QUIT
    end
    assert_operator received, :>, size, "head and all #{size} body bytes arrived"
    Timeout.timeout(20) { Process.waitpid(@server.pid) }
  ensure
    socket&.close
  end

  def test_winch_holds_requests_in_the_front_until_workers_return
    Process.kill(:WINCH, @server.pid)
    @server.wait_until("no workers", 10) { @server.worker_pids.empty? }
    @server.wait_until("the front to know", 10) { @server.log.include?("nightmare front dispatching to 0 workers") }
    waiting = Thread.new { get("/env", {}, timeout: 20) }
    @server.wait_until("the request queued in the front", 5) { figures["queued"] == 1 }
    assert waiting.alive?, "no worker: the request waits in the front"
    Process.kill(:TTIN, @server.pid)
    assert_equal 200, waiting.value.status, "the queued request is served when a worker returns"
  end

  def test_a_queued_request_whose_client_left_never_reaches_a_worker
    Process.kill(:WINCH, @server.pid)
    @server.wait_until("the front to know", 10) { @server.log.include?("nightmare front dispatching to 0 workers") }
    gone = connect(@server.port)
    gone.write("GET #{hold(0)} HTTP/1.1\r\nHost: t\r\n\r\n")
    @server.wait_until("the request queued in the front", 5) { figures["queued"] == 1 }
    gone.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack("ii")) # reset, not FIN
    gone.close
    @server.wait_until("the departed client's request out of the queue", 5) { figures["queued"].zero? }
    waiting = Thread.new { get("/env", {}, timeout: 20) }
    @server.wait_until("the next one queued", 5) { figures["queued"] == 1 }
    Process.kill(:TTIN, @server.pid)
    assert_equal 200, waiting.value.status, "the request queued behind it is served"
    assert_nil held_worker, "the departed client's request, first in the queue, was dropped"
  end

  def test_term_stops_everything_at_once
    slow = Thread.new { get(hold(20), {}, timeout: 25) rescue :cut } # rubocop:disable Style/RescueModifier
    @server.wait_until("the request to reach a worker", 5) { held_worker }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    Process.kill(:TERM, @server.pid)
    Timeout.timeout(15) { Process.waitpid(@server.pid) }
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :<, 10, "no waiting for the 20 s request"
    refute_equal 200, (slow.value.status rescue nil) # rubocop:disable Style/RescueModifier
  end

  def test_usr1_reopens_the_fronts_log_too
    rotated = "#{@server.log_path}.1"
    File.rename(@server.log_path, rotated)
    Process.kill(:USR1, @server.pid)
    @server.wait_until("the front to write to the new log", 10) do
      @server.log.include?("nightmare front: log files reopened")
    end
    assert_equal 200, get("/").status
  end

  def test_a_worker_killed_for_timeout_costs_only_its_request
    response = get("/sleep?30", {}, timeout: 20)
    assert_equal 502, response.status, "the worker died without answering"
    @server.wait_until("the master's timeout line", 5) { @server.log.match?(/timeout \(\d+s > 3s\), killing/) }
    assert_equal 200, get("/").status
    line = /ERROR -- : nightmare: a worker closed its connection for client 127\.0\.0\.1\S* early \(no response; killed or crashed\?\)/
    @server.wait_until("the front's line about the 502", 5) { @server.log.match?(line) }
  end

  def test_ttin_and_ttou_reach_the_fronts_dispatch
    Process.kill(:TTOU, @server.pid)
    @server.wait_until("one worker", 10) { @server.log.include?("nightmare front dispatching to 1 workers") }
    @server.wait_until("the worker to go", 10) { @server.worker_pids.size == 1 }
    assert_equal 200, get("/").status
    Process.kill(:TTIN, @server.pid)
    @server.wait_until("two workers", 10) { @server.log.include?("nightmare front dispatching to 2 workers") }
    @server.wait_until("the new worker", 10) { @server.worker_pids.size == 2 }
  end

  def test_killed_worker_leaves_no_client_socket_anywhere_but_the_front
    socket = connect(@server.port)
    socket.write("GET #{hold(5)} HTTP/1.1\r\nHost: t\r\n\r\n")
    @server.wait_until("the request to reach a worker", 5) { held_worker }
    inode = server_side_inode(socket.local_address.ip_port)
    holders = processes_holding(inode)
    assert_equal [@server.front_pid], holders, "only the front holds the client's connection"
    Process.kill(:KILL, held_worker)
    response = read_response(socket, 10)
    assert_equal 502, response.status
    assert_empty processes_holding(inode) - [@server.front_pid], "no worker kept the connection"
  ensure
    socket&.close
  end

  private

  # A request that stays in the app for +seconds+, and says so.
  def server_side_inode(client_port)
    line = File.readlines("/proc/net/tcp").find do |entry|
      fields = entry.split
      fields[1].end_with?(format(":%04X", @server.port)) && fields[2].end_with?(format(":%04X", client_port))
    end
    line&.split&.fetch(9)
  end

  def processes_holding(inode)
    Dir.glob("/proc/[0-9]*").filter_map do |dir|
      pid = Integer(File.basename(dir))
      pid if Dir.glob("#{dir}/fd/*").any? { |fd| File.readlink(fd) == "socket:[#{inode}]" rescue false } # rubocop:disable Style/RescueModifier
    rescue Errno::ENOENT, Errno::EACCES
      nil
    end
  end
end

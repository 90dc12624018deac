# frozen_string_literal: true

require_relative "test_helper"
require "etc"

# How requests reach the workers: the master's private socket, the
# preamble that only the front can write, and the queue in the front.
class HandoffTest < Minitest::Test
  include HttpHelpers

  def teardown
    @server&.stop
  end

  def test_only_the_front_gets_a_request_through_the_private_socket
    @server = UnicornServer.new(workers: 1).start
    path = @server.worker_socket
    assert path && File.socket?(path), "the master names its private socket in the log"
    assert_equal "1", get("/count").body

    if Process.euid.zero?
      nobody = Etc.getpwnam("nobody")
      pid = fork do
        Process::Sys.setgid(nobody.gid)
        Process::Sys.setuid(nobody.uid)
        UNIXSocket.new(path).close
        exit!(1)
      rescue Errno::EACCES
        exit!(0)
      end
      _, status = Process.waitpid2(pid)
      assert status.success?, "another user cannot even reach the socket"
    end

    ["GET /count HTTP/1.1\r\nHost: t\r\n\r\n", preamble(secret: "x" * 16) + "GET /count HTTP/1.1\r\nHost: t\r\n\r\n"]
      .each do |stranger_sends|
        stranger = UNIXSocket.new(path)
        stranger.write(stranger_sends)
        assert stranger.wait_readable(5), "the worker drops the stranger"
        answer = begin
          stranger.read
        rescue Errno::ECONNRESET
          "" # closed with the stranger's request unread
        end
        assert_equal "", answer, "and answers nothing"
        stranger.close
      end
    assert_equal "2", get("/count").body, "no stranger's request reached the app, and the worker carries on"
    refusals = -> { @server.log.scan("dropped a connection to the workers' private socket").size }
    # The worker logs right after it closes the stranger: the line may trail the close.
    @server.wait_until("both refusals logged", 5) { refusals.call >= 2 }
    assert_equal 2, refusals.call
  end

  # A process of the server's own user can reach the socket: a preamble it
  # begins and never ends held the only worker for 2 s; now a quarter of
  # a second (the front's own arrives with its connect).
  def test_a_preamble_begun_and_never_ended_holds_a_worker_only_briefly
    @server = UnicornServer.new(workers: 1).start
    partial = UNIXSocket.new(@server.worker_socket)
    partial.write(preamble(secret: "x" * 16)[0, 20])
    assert partial.wait_readable(1.5), "the worker drops it well within the 2 s it used to wait"
    assert_equal 200, get("/").status, "and serves the next request"
    @server.wait_until("the drop logged", 5) do
      @server.log.include?("dropped a connection to the workers' private socket: an incomplete preamble")
    end
  ensure
    partial&.close
  end

  def test_a_request_waiting_past_queue_timeout_gets_503_with_retry_after
    @server = UnicornServer.new(workers: 1, nightmare: "in_flight_per_worker: 1, queue_timeout: 1").start
    busy = Thread.new { get(hold(4), {}, timeout: 10) }
    @server.wait_until("the only worker to be busy", 5) { held_worker }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    response = get("/", {}, timeout: 10)
    waited = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    assert_equal 503, response.status
    assert_equal "5", response.headers["retry-after"]
    assert_operator waited, :>=, 0.9, "it waited its queue_timeout"
    assert_operator waited, :<, 3.5, "and no longer"
    assert_equal 200, busy.value.status
    @server.wait_until("the log line", 5) { @server.log.include?("waited queue_timeout (1s) for a worker; answered 503") }
  end

  def test_a_full_queue_answers_503_at_once_and_the_queued_request_is_served
    @server = UnicornServer.new(workers: 1, nightmare: "in_flight_per_worker: 1, max_queued_requests: 1").start
    busy = Thread.new { get(hold(2), {}, timeout: 10) }
    @server.wait_until("the only worker to be busy", 5) { held_worker }
    queued = Thread.new { get("/", {}, timeout: 10) }
    @server.wait_until("a request in the front's queue", 5) { figures["queued"] == 1 }
    response = get("/", {}, timeout: 1)
    assert_equal 503, response.status, "the queue holds one request"
    assert_equal "5", response.headers["retry-after"]
    assert_equal 200, busy.value.status
    assert_equal 200, queued.value.status
    @server.wait_until("the log line", 5) { @server.log.include?("(max_queued_requests); answered 503") }
  end

  # The private listener's backlog is 1024: allowed more in flight than
  # that, the front finds the accept queue full, keeps the rest queued
  # itself, and hands them over as requests end, with none lost.
  def test_a_full_accept_queue_keeps_requests_waiting_in_the_front
    clients = 1100
    soft, hard = Process.getrlimit(:NOFILE)
    Process.setrlimit(:NOFILE, [clients + 200, hard].min, hard) if soft < clients + 200
    @server = UnicornServer.new(workers: 1, nightmare: "in_flight_per_worker: 2000").start
    busy = Thread.new { get(hold(3), {}, timeout: 30) }
    @server.wait_until("the only worker to be busy", 5) { held_worker }
    sockets = Array.new(clients) do
      connect(@server.port).tap { |socket| socket.write("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n") }
    end
    @server.wait_until("the front to find the queue full", 10) do
      @server.log.include?("the workers' accept queue is full")
    end
    assert_equal 200, busy.value.status
    statuses = sockets.map { |socket| read_response(socket, 60).status }
    assert_equal [200] * clients, statuses, "every request was served, those that waited in the front too"
  ensure
    sockets&.each(&:close)
  end

  def test_a_worker_killed_mid_request_costs_only_that_request
    @server = UnicornServer.new(workers: 2).start
    doomed = Thread.new { get(hold(30), {}, timeout: 40) }
    @server.wait_until("a worker inside the app", 5) { held_worker }
    # More than the other worker takes at once: they wait in its accept
    # queue while the held worker dies.
    others = Array.new(12) { Thread.new { get("/sleep?0.2", {}, timeout: 30) } }
    @server.wait_until("most of them handed to the workers", 5) { figures["in_flight"] >= 10 }
    Process.kill(:KILL, held_worker)
    assert_equal 502, doomed.value.status
    assert_equal [200] * 12, others.map { |thread| thread.value.status }
  end

  def test_no_listener_on_the_private_socket_gives_503_and_a_log_line
    @server = UnicornServer.new(workers: 1).start
    File.unlink(@server.worker_socket)
    response = get("/")
    assert_equal 503, response.status
    @server.wait_until("the log line", 5) { @server.log.match?(/no workers listen on \S+ .*answering 503/) }
  end

  def test_the_private_socket_goes_with_its_master_and_a_stale_one_does_not_matter
    @server = UnicornServer.new(workers: 1).start
    first = @server.worker_socket
    @server.children # remembered, so that stop kills them too
    Process.kill(:KILL, @server.pid)
    Process.waitpid(@server.pid)
    assert File.socket?(first), "a master killed outright leaves its socket behind"
    @server.stop

    @server = UnicornServer.new(workers: 1).start
    refute File.exist?(first), "the next master removes the stale socket"
    second = @server.worker_socket
    assert_equal 200, get("/").status
    @server.stop
    @server = nil
    refute File.exist?(second), "a master removes its own socket when it exits"
  end

  private

  # A PROXY protocol v2 preamble as the front writes it, with +secret+.
  def preamble(secret:)
    addresses = [127, 0, 0, 1, 0, 0, 0, 0].pack("C8") + [1234, 0].pack("nn")
    "\r\n\r\n\0\r\nQUIT\n\x21\x11".b + [55].pack("n") + addresses +
      [0xE0, 16].pack("Cn") + secret + [0x04, 21].pack("Cn") + ("\0" * 21)
  end
end
